"""Training throughput for the logs: shapes/s (global and per rank), data-wait fraction, MFU.

Everything is measured over the window since the previous log line, so a slow start (worker
spin-up, JIT, the first checkpoint) does not linger in later numbers. MFU is the model FLOPs of one
shape (model/flops.py: teacher forward, student forward and backward, no checkpoint recompute) times
shapes/s per rank, over the device's dense peak for the precision the matmuls run in.
"""

from __future__ import annotations

import dataclasses
import time

import torch

from pipeline.metrics import LoaderMeter, LoaderStats

PRECISIONS = ("fp32", "bf16", "fp16")

# Dense peaks from the vendor datasheets (half the "with sparsity" figures where only those are given),
# matched in order against the CUDA device name: "H100 PCIe" before "H100", "GH200" before "H200".
# fp32 is the plain CUDA-core peak, tf32 the TF32 tensor-core peak, bf16/fp16 the tensor-core peaks.
PEAK_FLOPS: tuple[tuple[str, dict[str, float]], ...] = (
    ("H100 PCIe", {"fp32": 51e12, "tf32": 378e12, "bf16": 756.5e12, "fp16": 756.5e12}),
    ("H100", {"fp32": 67e12, "tf32": 494.5e12, "bf16": 989.5e12, "fp16": 989.5e12}),  # SXM
    ("GH200", {"fp32": 67e12, "tf32": 494.5e12, "bf16": 989.5e12, "fp16": 989.5e12}),
    ("H200", {"fp32": 67e12, "tf32": 494.5e12, "bf16": 989.5e12, "fp16": 989.5e12}),  # SXM
    ("A100", {"fp32": 19.5e12, "tf32": 156e12, "bf16": 312e12, "fp16": 312e12}),
    ("L40S", {"fp32": 91.6e12, "tf32": 183e12, "bf16": 362.05e12, "fp16": 362.05e12}),
)


def peak_flops(
    device: torch.device, configured_tflops: float | None, precision: str, tf32: bool
) -> float | None:
    """Dense peak FLOP/s of one device for the matmul precision: configured, else from the GPU's name.

    fp32 counts the TF32 tensor cores when `tf32` lets matmuls use them. None (no MFU) on CPU or
    unknown GPUs.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if configured_tflops is not None:
        return configured_tflops * 1e12
    if device.type != "cuda":
        return None
    key = "tf32" if precision == "fp32" and tf32 else precision
    name = torch.cuda.get_device_name(device)
    return next((peaks[key] for gpu, peaks in PEAK_FLOPS if gpu in name), None)


class Throughput:
    """Per-window throughput; `flops_per_sample` is model/flops.py's `training_flops(...).per_shape`."""

    def __init__(
        self, global_batch: int, world_size: int, peak: float | None, flops_per_sample: float | None
    ) -> None:
        self.global_batch, self.world_size = global_batch, world_size
        self.peak, self.flops_per_sample = peak, flops_per_sample
        self._meter: LoaderMeter | None = None
        self._seen = LoaderStats()
        self._since = time.perf_counter()

    def new_meter(self, meter: LoaderMeter) -> None:
        self._meter, self._seen = meter, LoaderStats()

    def exclude(self, seconds: float) -> None:
        """Leave `seconds` of work that is not training (a monitor pass) out of the current window."""
        self._since += seconds

    def metrics(self) -> dict[str, float]:
        """Throughput since the previous call; call it once per log step on every rank."""
        now = time.perf_counter()
        stats = self._meter.stats if self._meter is not None else LoaderStats()
        window = LoaderStats(**{f.name: getattr(stats, f.name) - getattr(self._seen, f.name)
                                for f in dataclasses.fields(LoaderStats)})
        self._seen = dataclasses.replace(stats)
        steps = window.batches
        seconds = max(now - self._since, 1e-9)
        self._since = now
        per_s = steps * self.global_batch / seconds
        per_rank = per_s / self.world_size
        out = {"throughput/samples_per_s": per_s, "throughput/samples_per_s_per_rank": per_rank,
               **window.as_metrics()}
        if self.flops_per_sample is not None and self.peak:
            out["throughput/mfu"] = self.flops_per_sample * per_rank / self.peak
        return out
