"""What each mode of the check runs, in which order, and with how much time.

The full check is sized for one H100/H200 and 7.5 minutes; the smoke check runs every part on a CPU
with the `tiny` model in a few minutes. Parts run in the order of what matters most: the CUDA tests,
the bf16 steps of S and B, patchify placement, the real loader into the engine, compiled S in bf16,
the other precisions, then the other compiled steps for whatever time is left.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class StepConfig:
    """One `bench.model_step` configuration."""

    model: str  # label of a model config in Settings.models
    precision: str  # fp32 | bf16 | fp16
    compile: bool

    @property
    def key(self) -> str:
        return f"model_step/{self.model}/{self.precision}/{'compiled' if self.compile else 'eager'}"


@dataclass(frozen=True)
class Limit:
    most_s: float  # the longest the part may run
    least_s: float  # not started with less of the budget left


@dataclass(frozen=True)
class Settings:
    mode: str
    device: str
    budget_s: float
    models: dict[str, str]  # label -> model config
    batch_size: int
    warmup: int
    warmup_fp16: int  # fp16 warms up longer: the loss scale halves from 2^16 while early steps overflow
    steps: int
    first_steps: tuple[StepConfig, ...]  # before the loader parts
    later_steps: tuple[StepConfig, ...]  # after them, compiled last
    not_run: tuple[tuple[StepConfig, str, str], ...]  # listed in the report without running: (config, status, why)
    shard_source: str
    shard_size: int
    shard_points: int
    train_config: str
    train_model: str  # label of the training config's model (for the placement fallback)
    train_precision: str
    train_overrides: tuple[str, ...]
    train_warmup: int
    train_steps: int
    patchify_config: str
    patchify_batch: int
    patchify_repeats: int
    limits: dict[str, Limit] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)  # for every part's process


def _steps(model_precisions: str, compile: bool) -> tuple[StepConfig, ...]:
    """'S:bf16 B:bf16' -> StepConfigs in that order."""
    return tuple(StepConfig(*item.split(":"), compile) for item in model_precisions.split())


FULL = Settings(
    mode="full", device="cuda", budget_s=450.0,
    models={"S": "configs/model/asymdsd_s.yaml", "B": "configs/model/asymdsd_b.yaml"},
    batch_size=128, warmup=3, warmup_fp16=10, steps=10,
    first_steps=_steps("S:bf16 B:bf16", False),
    # compiled S bf16 first (the production candidate), then the cheap eager steps, then compiled ones
    later_steps=_steps("S:bf16", True) + _steps("S:fp32 S:fp16 B:fp32 B:fp16", False)
    + _steps("B:bf16 S:fp16 B:fp16 S:fp32 B:fp32", True),
    not_run=(),
    # 2,560 shapes of 16,384 points: 20 steps of 128, one epoch of warm-up + timed steps
    shard_source="synthetic:2560", shard_size=256, shard_points=16384,
    train_config="configs/pretrain/asymdsd_s_shapenet.yaml", train_model="S", train_precision="bf16",
    train_overrides=(), train_warmup=4, train_steps=16,
    patchify_config="configs/pretrain/asymdsd_s_shapenet.yaml", patchify_batch=128, patchify_repeats=10,
    limits={"environment": Limit(60, 10), "shards": Limit(150, 30), "cuda_tests": Limit(150, 30),
            "model_step": Limit(90, 20), "model_step_compiled": Limit(180, 60), "patchify": Limit(60, 15),
            "training": Limit(150, 45)},
)

SMOKE = Settings(
    mode="smoke", device="cpu", budget_s=900.0,
    models={"tiny": "configs/model/tiny.yaml"},
    batch_size=8, warmup=1, warmup_fp16=1, steps=2,
    first_steps=_steps("tiny:fp32 tiny:bf16", False),
    later_steps=_steps("tiny:fp32", True),  # compiling on CPU takes minutes: one configuration
    not_run=(
        (StepConfig("tiny", "fp16", False), "not_available", "fp16 is not available on CPU"),
        (StepConfig("tiny", "fp16", True), "not_available", "fp16 is not available on CPU"),
        (StepConfig("tiny", "bf16", True), "skipped", "the smoke check compiles one configuration"),
    ),
    shard_source="synthetic:64", shard_size=16, shard_points=4096,
    train_config="configs/pretrain/demo.yaml", train_model="tiny", train_precision="fp32",
    train_overrides=("train.global_batch=8",), train_warmup=2, train_steps=4,
    patchify_config="configs/pretrain/demo.yaml", patchify_batch=16, patchify_repeats=3,
    limits={"environment": Limit(120, 10), "shards": Limit(300, 30), "cuda_tests": Limit(300, 30),
            "model_step": Limit(300, 30), "model_step_compiled": Limit(600, 60), "patchify": Limit(300, 15),
            "training": Limit(400, 45)},
    # one intra-op thread: on a small shared CPU PyTorch's threads stall each other (BENCHMARKS.md)
    env={"OMP_NUM_THREADS": "1"},
)
