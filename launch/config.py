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
import json
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from model.config import ConfigError, ModelConfig, StrictModel, format_validation_error
from pipeline.crops import AugmentSpec, CropSpec, MultiCropSpec
from pipeline.loader import DatasetSource, LoaderConfig, PatchSpec
from pipeline.shards import ReadPolicy

Pair = tuple[float, float]


class DatasetConfig(StrictModel):
    url: str = Field(description="dataset directory or manifest.json, local or s3://")
    weight: float = Field(1.0, gt=0)
    split: str = "train"
    storage_options: dict[str, Any] = Field(default_factory=dict, description="fsspec options (credentials: use env)")


class CropConfig(StrictModel):
    count: int = Field(ge=1)
    points: int = Field(ge=1)
    scale: Pair
    aspect: Pair = (0.33, 3.0)


class AugmentConfig(StrictModel):
    rotate_z: bool = True
    scale: Pair = (0.8, 1.2)


class ReadConfig(StrictModel):
    retries: int = Field(3, ge=0)
    backoff_s: float = Field(0.5, ge=0)
    verify: bool = True
    cache_dir: str | None = None
    cache_bytes: int = Field(16 << 30, gt=0)


class DataConfig(StrictModel):
    datasets: list[DatasetConfig] = Field(min_length=1)
    global_crops: CropConfig = CropConfig(count=2, points=1024, scale=(0.4, 1.0))
    local_crops: CropConfig | None = CropConfig(count=4, points=256, scale=(0.05, 0.4))
    augment: AugmentConfig = AugmentConfig()
    loader_patchify: bool = Field(True, description="FPS + kNN in the loader workers (default, measured faster)")
    num_workers: int = Field(4, ge=0)
    block_shards: int = Field(8, ge=1)
    on_shard_error: Literal["skip", "stop"] = "skip"
    read: ReadConfig = ReadConfig()


class OptimConfig(StrictModel):
    """AdamW on one parameter group; warm-up then cosine, stepped per optimizer step."""

    lr: float = Field(5e-4, gt=0, description="peak learning rate, reached after warmup_epochs")
    lr_start: float = Field(1e-7, ge=0)
    lr_end: float = Field(1e-6, ge=0)
    warmup_epochs: float = Field(10.0, ge=0)
    weight_decay: float = Field(0.05, ge=0)
    weight_decay_end: float | None = Field(None, ge=0, description="cosine to this value; null keeps it constant")
    betas: Pair = (0.9, 0.999)
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


class CheckpointConfig(StrictModel):
    dir: str | None = Field(None, description="default: <output_dir>/checkpoints (use a shared volume on clusters)")
    every_steps: int = Field(1000, ge=0, description="0: never by steps")
    every_minutes: float = Field(30.0, ge=0, description="0: never by time")
    keep_last: int = Field(3, ge=1)


class MlflowConfig(StrictModel):
    enabled: bool = Field(True, description="false: no MLflow at all (benchmarks, machines without it)")
    tracking_uri: str | None = Field(None, description="default: $MLFLOW_TRACKING_URI, else sqlite in output_dir")
    experiment: str = "asymdsd-pretrain"
    run_name: str | None = None
    system_metrics: bool = True
    system_metrics_interval_s: float = Field(10.0, gt=0)


class PretrainConfig(StrictModel):
    name: str = "pretrain"
    output_dir: str = Field("runs/pretrain", description="exports, checkpoints and the default MLflow store")
    model: ModelConfig
    data: DataConfig
    optim: OptimConfig = OptimConfig()
    train: TrainConfig = TrainConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    mlflow: MlflowConfig = MlflowConfig()
    deepspeed: dict[str, Any] = Field(default_factory=dict, description="DeepSpeed JSON (path or mapping)")

    @field_validator("deepspeed")
    @classmethod
    def _job_owned_sections(cls, ds: dict[str, Any]) -> dict[str, Any]:
        for key in ("bf16", "fp16", "torch_autocast", "amp"):
            if key in ds:
                raise ValueError(f"'{key}' must not be set: precision is train.precision (fp32 weights in the engine, "
                                 f"autocast forward; launch/precision.py says why)")
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
        if self.train.precision == "fp16" and self.train.device == "cpu":
            raise ValueError("train.precision=fp16 needs CUDA but train.device=cpu: use train.precision=fp32 or bf16")
        if self.train.micro_batch is not None and self.train.global_batch % self.train.micro_batch:
            raise ValueError(f"train.global_batch={self.train.global_batch} must be a multiple of "
                             f"train.micro_batch={self.train.micro_batch}")
        return self

    def loader_config(self) -> LoaderConfig:
        d = self.data
        loc = None if not (self.model.uses_cls and self.model.num_local_crops > 0) else d.local_crops
        crops = MultiCropSpec(_crop(d.global_crops), None if loc is None else _crop(loc),
                              AugmentSpec(d.augment.rotate_z, tuple(d.augment.scale)))
        p = self.model.patchify
        patches = PatchSpec(p.global_patches, p.local_patches, p.patch_size) if d.loader_patchify else None
        return LoaderConfig(
            datasets=tuple(DatasetSource(s.url, s.weight, s.split, dict(s.storage_options)) for s in d.datasets),
            crops=crops, seed=self.train.seed, block_shards=d.block_shards, patches=patches,
            on_shard_error=d.on_shard_error, read=ReadPolicy(**d.read.model_dump()),
        )

    def checkpoint_dir(self) -> Path:
        return Path(self.checkpoint.dir or Path(self.output_dir) / "checkpoints")


def _crop(c: CropConfig) -> CropSpec:
    return CropSpec(c.count, c.points, tuple(c.scale), tuple(c.aspect))


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


def load_pretrain_config(path: str | os.PathLike, overrides: list[str] | tuple[str, ...] = ()) -> PretrainConfig:
    """Read the job YAML, inline the model/DeepSpeed files it names, apply overrides, validate."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"pretrain config not found: {path}")
    tree = _read_mapping(path)
    # `deepspeed=configs/deepspeed/zero2.json` swaps a whole include: those go first, then the
    # includes are read, then the dotted overrides reach into them.
    swaps = [o for o in overrides if o.partition("=")[0] in INCLUDES]
    for item in swaps:
        apply_override(tree, item)
    for key in INCLUDES:
        if isinstance(tree.get(key), str):
            tree[key] = _read_mapping(_resolve(tree[key], path))
    for item in overrides:
        if item not in swaps:
            apply_override(tree, item)
    try:
        return PretrainConfig.model_validate(tree)
    except ValidationError as err:
        source = f"{path} with overrides {list(overrides)}" if overrides else str(path)
        raise ConfigError(format_validation_error(err, source, PretrainConfig, "pretrain config")) from None


def apply_override(tree: dict[str, Any], item: str) -> None:
    """`a.b.c=value` (value parsed as YAML: numbers, booleans, null, lists) into the nested mapping.

    Intermediate keys are created as needed, so a misspelt key reaches validation and is reported
    there with the keys allowed at that place. Integer parts index into lists (`data.datasets.0.url=...`).
    """
    key, sep, raw = item.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {item!r} is not KEY=VALUE with a dotted KEY (e.g. train.max_steps=10)")
    value = yaml.safe_load(raw) if raw.strip() else ""
    parts = key.split(".")
    node: Any = tree
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        where = ".".join(parts[: i + 1])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"override {key}: {where} is not an index of a list of {len(node)}")
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                if not isinstance(node.get(part), (dict, list)):
                    node[part] = {}
                node = node[part]
        else:
            raise ConfigError(f"override {key}: {'.'.join(parts[:i])} holds a value, not a section")


def _read_mapping(path: Path) -> dict[str, Any]:
    text = path.read_text()
    data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def _resolve(ref: str, config_path: Path) -> Path:
    """A referenced file: as given (relative to the working directory), else next to the job config."""
    for candidate in (Path(ref), config_path.parent / ref):
        if candidate.is_file():
            return candidate
    raise ConfigError(f"{config_path}: file {ref!r} not found (relative to the working directory or the config)")
