"""The pretraining job's typed configuration: one YAML file plus `key=value` overrides.

A job config names its model config and DeepSpeed config by path (or inlines them); both are read
into the tree *before* the command-line overrides are applied, so `model.encoder.depth=6` or
`deepspeed.zero_optimization.stage=2` work like any other key. The merged tree is then validated at
once: an unknown key or a bad value stops the job before any work, and the message names every bad
key with the keys allowed there.

DeepSpeed's batch sizes and gradient clipping are not written in its JSON: they follow from `train`
and `optim` here (`deepspeed_config`), so there is one place to change them. A JSON that sets them
anyway must agree, or the job stops and says which key to move.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from configuration import ConfigError, StrictModel, load_config
from launch.evaluation.data import LabelledDataConfig
from launch.evaluation.features import InputOverrides
from model.config import ModelConfig, PatchifyConfig
from pipeline.config import CropConfig, DataConfig

Beta = Annotated[float, Field(ge=0, lt=1)]


class OptimConfig(StrictModel):
    """AdamW on one parameter group; warm-up then cosine, stepped per optimizer step."""

    lr: float = Field(5e-4, gt=0, description="peak learning rate, reached after warmup_epochs")
    lr_start: float = Field(1e-7, ge=0)
    lr_end: float = Field(1e-6, ge=0)
    warmup_epochs: float = Field(10.0, ge=0)
    weight_decay: float = Field(0.05, ge=0)
    weight_decay_end: float | None = Field(None, ge=0, description="cosine to this value; null keeps it constant")
    betas: tuple[Beta, Beta] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0)
    grad_clip: float = Field(10.0, ge=0, description="global L2 norm; 0 disables clipping")


class TrainConfig(StrictModel):
    epochs: float = Field(300, gt=0, description="length of every schedule")
    global_batch: int = Field(128, ge=1, description="samples per optimizer step over all ranks")
    micro_batch: int | None = Field(
        None, ge=1, description="samples per rank per forward/backward; null: global_batch / ranks (no accumulation)"
    )
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimizer steps (schedules unchanged)")
    seed: int = Field(0, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    max_nonfinite_steps: int = Field(
        5, ge=1, description="stop after this many skipped steps in a row (fp16 overflows only at the loss scale's floor)"
    )
    log_every: int = Field(10, ge=1)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="autocast dtype of the forward; weights stay fp32. auto: bf16 on CUDA, fp32 on CPU"
    )
    compile: bool = Field(False, description="torch.compile the model's blocks, tokenizer and heads (static shapes)")
    tf32: bool = True
    peak_tflops: float | None = Field(None, gt=0, description="device peak for MFU; null: from the GPU name")
    memory_check: bool = Field(
        True, description="refuse a micro-batch whose estimated activations exceed free memory (launch/training/memory.py)"
    )


class CheckpointConfig(StrictModel):
    dir: str | None = Field(None, description="default: <output_dir>/checkpoints (use a shared volume on clusters)")
    every_steps: int = Field(1000, ge=0, description="0: never by steps")
    every_minutes: float = Field(30.0, ge=0, description="0: never by time")
    keep_last: int = Field(3, ge=1)
    preemption_grace_s: float = Field(
        120.0, gt=0, description="on SIGTERM/SIGINT every rank finishes its step, checkpoints and exits 0 within this "
                                 "many seconds, or a watchdog ends it with exit code 124; Kubernetes' "
                                 "terminationGracePeriodSeconds must be longer (launch/training/preemption.py)")


class MlflowConfig(StrictModel):
    enabled: bool = Field(True, description="false: no MLflow at all (benchmarks, machines without it)")
    tracking_uri: str | None = Field(None, description="default: $MLFLOW_TRACKING_URI, else sqlite in output_dir")
    experiment: str = "asymdsd-pretrain"
    run_name: str | None = Field(None, description="default: the job's name")
    system_metrics: bool = True
    system_metrics_interval_s: float = Field(10.0, gt=0)


class MonitorSet(StrictModel):
    """A labelled set the teacher encoder is scored on during pretraining."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="metric key part: monitor/<name>/<protocol>")
    dataset: LabelledDataConfig
    input: InputOverrides = Field(InputOverrides(), description="unset keys: the evaluation default for the "
                                                                "dataset kind (2,048 points ScanObjectNN, else 1,024)")


class CollapseConfig(StrictModel):
    """When the distillation targets count as collapsed: the alarm's floor and patience."""

    min_marginal_fraction: float = Field(
        0.1, ge=0, le=1, description="alarm when the entropy of the batch-mean target stays below this fraction of ln K")
    patience: int = Field(3, ge=1, description="logged steps in a row under the floor before the alarm")


class MonitorConfig(StrictModel):
    """Downstream probes of the teacher encoder during pretraining (the reference's k-NN and SVM evaluations)."""

    sets: list[MonitorSet] = Field(default_factory=list, description="no sets: no probes")
    protocols: tuple[Literal["svm", "knn"], ...] = Field(("svm", "knn"), min_length=1)
    every_epochs: float = Field(5.0, ge=0, description="0: not by epochs")
    every_steps: int = Field(0, ge=0, description="0: not by steps")
    at_start: bool = Field(True, description="also probe the initial weights (step 0): the curve's baseline")
    batch_size: int = Field(32, ge=1)
    knn_k: int = Field(5, ge=1)
    svm_c: float = Field(1.0, gt=0)
    collapse: CollapseConfig = CollapseConfig()

    @field_validator("sets")
    @classmethod
    def _unique_names(cls, sets: list[MonitorSet]) -> list[MonitorSet]:
        names = [s.name for s in sets]
        if len(set(names)) != len(names):
            raise ValueError(f"set names must be unique (they name the metrics), got {names}")
        return sets

    @field_validator("protocols")
    @classmethod
    def _unique_protocols(cls, protocols: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(protocols)) != len(protocols):
            raise ValueError(f"protocols must be unique, got {list(protocols)}")
        return protocols


class PretrainConfig(StrictModel):
    name: str = "pretrain"
    output_dir: str = Field("runs/pretrain", description="exports, checkpoints and the default MLflow store")
    model: ModelConfig
    data: DataConfig
    optim: OptimConfig = OptimConfig()
    train: TrainConfig = TrainConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    mlflow: MlflowConfig = MlflowConfig()
    monitor: MonitorConfig = MonitorConfig()
    deepspeed: dict[str, Any] = Field(default_factory=dict, description="DeepSpeed JSON (path or mapping)")

    @field_validator("deepspeed")
    @classmethod
    def _job_owned_sections(cls, ds: dict[str, Any]) -> dict[str, Any]:
        for key in ("bf16", "fp16", "torch_autocast", "amp"):
            if key in ds:
                raise ValueError(f"'{key}' must not be set: precision is train.precision (fp32 weights in the engine, "
                                 f"autocast forward; launch/training/precision.py says why)")
        for key in ("optimizer", "scheduler"):
            if key in ds:
                raise ValueError(f"'{key}' must not be set: the job steps its own AdamW and schedules (optim.*)")
        return ds

    @model_validator(mode="after")
    def _consistent(self) -> PretrainConfig:
        g, loc = self.data.global_crops, self.data.local_crops
        m = self.model
        if g.count != m.num_global_crops:
            raise ValueError(f"data.global_crops.count={g.count} but model.num_global_crops={m.num_global_crops}")
        wants_local = m.uses_cls and m.num_local_crops > 0
        if wants_local and (loc is None or loc.count != m.num_local_crops):
            raise ValueError(f"model.num_local_crops={m.num_local_crops} needs data.local_crops.count to match "
                             f"(got {None if loc is None else loc.count})")
        if m.backbone == "vit":
            _check_patches(g, "global", m.patchify.global_patches, m.patchify.patch_size)
            if wants_local:
                _check_patches(loc, "local", m.patchify.local_patches, m.patchify.patch_size)
        if self.train.precision == "fp16" and self.train.device == "cpu":
            raise ValueError("train.precision=fp16 needs CUDA but train.device=cpu: use train.precision=fp32 or bf16")
        if self.train.micro_batch is not None and self.train.global_batch % self.train.micro_batch:
            raise ValueError(f"train.global_batch={self.train.global_batch} must be a multiple of "
                             f"train.micro_batch={self.train.micro_batch}")
        return self

    def crop_data(self) -> DataConfig:
        """The `data` section as the loader should crop it: no local crops where the model has no use for them."""
        if self.model.uses_cls and self.model.num_local_crops > 0:
            return self.data
        return self.data.model_copy(update={"local_crops": None})

    def loader_patches(self) -> PatchifyConfig | None:
        """The model's patch counts when the loader computes FPS + kNN (`data.loader_patchify`) for the ViT,
        else None (point networks read the points themselves)."""
        return self.model.patchify if self.data.loader_patchify and self.model.backbone == "vit" else None

    def checkpoint_dir(self) -> Path:
        return Path(self.checkpoint.dir or Path(self.output_dir) / "checkpoints")


def _check_patches(crop: CropConfig, kind: str, patches: int, patch_size: int) -> None:
    """A crop of `kind` must hold a point per patch centre, and the points of one patch (its kNN group)."""
    if crop.points < patches:
        raise ValueError(f"data.{kind}_crops.points={crop.points} is fewer than model.patchify.{kind}_patches="
                         f"{patches}: every patch centre is a point of the crop")
    if crop.points < patch_size:
        raise ValueError(f"model.patchify.patch_size={patch_size} is more than data.{kind}_crops.points="
                         f"{crop.points}: a patch is a group of that many points of the crop")


# -- DeepSpeed JSON -------------------------------------------------------------------------------

def deepspeed_config(cfg: PretrainConfig, world_size: int) -> dict[str, Any]:
    """The DeepSpeed config dict for `world_size` ranks: the JSON plus batch sizes and clipping from `cfg`."""
    t = cfg.train
    if t.global_batch % world_size:
        raise ConfigError(f"train.global_batch={t.global_batch} does not split over {world_size} ranks")
    micro = t.micro_batch or t.global_batch // world_size
    per_step = micro * world_size
    if t.global_batch % per_step:
        raise ConfigError(
            f"train.global_batch={t.global_batch} is not a multiple of train.micro_batch x world size "
            f"({micro} x {world_size}); choose micro_batch so gradient accumulation is whole"
        )
    derived = {
        "train_batch_size": t.global_batch,
        "train_micro_batch_size_per_gpu": micro,
        "gradient_accumulation_steps": t.global_batch // per_step,
        "gradient_clipping": cfg.optim.grad_clip,
    }
    ds = copy.deepcopy(cfg.deepspeed)
    for key, value in derived.items():
        if key in ds and ds[key] != value:
            raise ConfigError(f"deepspeed.{key}={ds[key]!r} contradicts the job config ({value!r}): set it through "
                              f"train.global_batch / train.micro_batch / optim.grad_clip and drop it from the JSON")
        ds[key] = value
    ds.setdefault("steps_per_print", 1 << 30)  # the job logs; keep DeepSpeed's own prints quiet
    if ds.get("zero_optimization", {}).get("stage", 0) > 0:
        ds["zero_allow_untested_optimizer"] = True  # our AdamW subclass (a skippable step) is a client optimizer
    return ds


# -- loading ------------------------------------------------------------------------------------

INCLUDES = ("model", "deepspeed")  # keys whose value may be a path to a YAML/JSON file


def load_pretrain_config(path: str | os.PathLike, overrides: Sequence[str] = ()) -> PretrainConfig:
    """Read the job YAML, inline the model/DeepSpeed files it names, apply overrides, validate."""
    return load_config(PretrainConfig, path, overrides, INCLUDES, what="pretrain config")
