"""Where patchify (FPS + kNN) belongs, decided by one stated rule from the check's own measurements."""

from __future__ import annotations

HEADROOM = 0.75  # share of the loader's cores the loader may need and still keep up

RULE = ("Patchify stays in the loader workers while they keep up with the GPU with 25% headroom, where it "
        "costs no GPU time: model shapes/s x loader ms per shape (one core, patchify included) / 1000 <= "
        "0.75 x (CPU cores - 1; one core runs the training process). Otherwise it moves to the GPU, where it "
        "takes GPU ms per shape x model shapes/s / 1000 of the GPU's time and frees model shapes/s x loader "
        "patchify ms per shape / 1000 cores.")


def decide(model_shapes_per_s: float, loader_ms_per_shape: float, loader_patchify_ms_per_shape: float,
           gpu_ms_per_shape: float, cpu_cores: int) -> dict:
    """The decision and the numbers that make it, for one GPU with `cpu_cores` cores."""
    available = max(cpu_cores - 1, 1)
    needed = model_shapes_per_s * loader_ms_per_shape / 1e3
    return {
        "decision": "loader" if needed <= HEADROOM * available else "gpu",
        "model_shapes_per_s": model_shapes_per_s,
        "loader_ms_per_shape": loader_ms_per_shape,
        "loader_cores_needed": needed,
        "loader_cores_available": available,
        "gpu_time_share_if_on_gpu": model_shapes_per_s * gpu_ms_per_shape / 1e3,
        "cores_freed_if_on_gpu": model_shapes_per_s * loader_patchify_ms_per_shape / 1e3,
        "rule": RULE,
    }
