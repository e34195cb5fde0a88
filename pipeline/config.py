"""The typed settings of the input stream: datasets, crops, augmentation, shard reads (the job's `data` section)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field

from configuration import StrictModel


def _ordered(pair: tuple[float, float]) -> tuple[float, float]:
    if pair[0] > pair[1]:
        raise ValueError(f"must be [low, high] with low <= high, got {list(pair)}")
    return pair


Fraction = Annotated[float, Field(gt=0, le=1)]
Positive = Annotated[float, Field(gt=0)]
FractionRange = Annotated[tuple[Fraction, Fraction], AfterValidator(_ordered)]  # [low, high] within (0, 1]
PositiveRange = Annotated[tuple[Positive, Positive], AfterValidator(_ordered)]  # [low, high] above 0


class DatasetConfig(StrictModel):
    url: str = Field(description="dataset directory or manifest.json, local or s3://")
    weight: float = Field(1.0, gt=0, description="sampling weight relative to the other datasets")
    split: str = "train"
    storage_options: dict[str, Any] = Field(default_factory=dict, description="fsspec options (credentials: use env)")


class CropConfig(StrictModel):
    """One kind of crop (global or local)."""

    count: int = Field(ge=1, description="crops of this kind per sample")
    points: int = Field(ge=1, description="points per crop after subsampling; also the minimum box size")
    scale: FractionRange = Field(description="fraction of the stored points the box grows to, U(lo, hi)")
    aspect: PositiveRange = Field((0.33, 3.0), description="box aspect ratio, U(lo, hi)")


class AugmentConfig(StrictModel):
    """Per-crop augmentation after cropping."""

    rotate_z: bool = Field(True, description="rotation about Z, angle U(0, 2 pi)")
    scale: PositiveRange = Field((0.8, 1.2), description="anisotropic scaling: each axis its own U(lo, hi)")


class MultiCropConfig(StrictModel):
    """Crops per sample; `local_crops: null` is the single-kind `mask` mode."""

    global_crops: CropConfig = CropConfig(count=2, points=1024, scale=(0.4, 1.0))
    local_crops: CropConfig | None = CropConfig(count=4, points=256, scale=(0.05, 0.4))
    augment: AugmentConfig = AugmentConfig()


class ReadConfig(StrictModel):
    retries: int = Field(3, ge=0, description="attempts after the first, for transient I/O errors")
    backoff_s: float = Field(0.5, ge=0, description="first retry delay; doubles each time")
    verify: bool = Field(True, description="sha256 against the manifest before a shard's first use in a process")
    cache_dir: str | None = Field(None, description="for remote shards; default: a private temporary directory")
    cache_bytes: int = Field(16 << 30, gt=0)


class DataConfig(MultiCropConfig):
    datasets: list[DatasetConfig] = Field(min_length=1)
    loader_patchify: bool = Field(True, description="FPS + kNN in the loader workers (default, measured faster)")
    num_workers: int = Field(4, ge=0)
    block_shards: int = Field(8, ge=1)
    on_shard_error: Literal["skip", "stop"] = "skip"
    read: ReadConfig = ReadConfig()
