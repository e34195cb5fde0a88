"""Typed configuration of a sharding job: a YAML file under configs/data/ and/or command-line flags."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import yaml
from pydantic import Field

from configuration import StrictModel, load_config
from sharding.fingerprint import DEFAULT_TOLERANCE
from sharding.limits import Limits
from sharding.sampling import MIN_POINTS, SampleSpec
from sharding.sources import SourceSpec

YAML_DOCUMENT_END = "...\n"  # what yaml.safe_dump appends after a lone scalar


class SourceConfig(StrictModel):
    """One corpus to read (`--source KIND:PATH`, or an entry of `sources:`)."""

    kind: str
    path: str = Field(description="directory, archive or URL; for `synthetic` the number of shapes")
    name: str = Field("", description="key prefix and count bucket (default: the kind)")
    options: dict[str, Any] = Field(default_factory=dict)
    storage_options: dict[str, Any] = Field(default_factory=dict, description="fsspec options; never logged")

    def spec(self) -> SourceSpec:
        return SourceSpec(self.kind, self.path, self.name, dict(self.options), dict(self.storage_options))


class TestSetConfig(StrictModel):
    """An evaluation set whose test shapes pretraining must not hold (`--test-set KIND:PATH`)."""

    kind: Literal["scanobjectnn", "modelnet40_h5", "shapenetpart", "objaverse_lvis", "shards"]
    path: str
    name: str = Field("", description="name in the report and the manifest (default: the kind)")
    options: dict[str, Any] = Field(default_factory=dict, description=(
        "reader options of launch.evaluation.data.LabelledDataConfig: variant, lvis_shot, lvis_fold"))
    storage_options: dict[str, Any] = Field(default_factory=dict, description="fsspec options; never logged")

    @property
    def label(self) -> str:
        return self.name or self.kind


class DedupConfig(StrictModel):
    """The `dedup:` stage: find duplicates and copies of test shapes, and optionally exclude them."""

    tolerance: float = Field(DEFAULT_TOLERANCE, gt=0, description=(
        "L1 distance between shape descriptors under which two samples are the same shape"))
    test_sets: list[TestSetConfig] = Field(default_factory=list)
    exclude: list[Literal["duplicate", "test-set"]] = Field(default_factory=list, description=(
        "what training skips: later copies inside the corpus (duplicate), copies of test shapes (test-set)"))


class ShardingConfig(StrictModel):
    """What to read, where to write, how to sample, and how many failures the job tolerates."""

    sources: list[SourceConfig] = Field(default_factory=list)
    output: str | None = None
    shard_size: int = Field(1000, ge=1)
    num_points: int = Field(16384, ge=1)
    dtype: Literal["float32", "float16"] = "float32"
    min_points: int = Field(MIN_POINTS, ge=1, description=(
        "reject point clouds with fewer points (capped at num_points, the most a stored cloud has); the default "
        "is one global crop of the pipeline (1024 points, 64 patches of 32), since a crop of a smaller cloud is "
        "the whole cloud, zero-padded"))
    max_faces: int = Field(5_000_000, ge=1)
    max_vertices: int = Field(10_000_000, ge=1)
    max_bytes: int = Field(1 << 30, ge=1, description=(
        "reject raw inputs larger than this before reading them; no read returns more, so it bounds memory"))
    time_limit_s: float = Field(120.0, ge=0, description="per-shape decode + sampling time limit (0: none)")
    max_failure_ratio: float = Field(0.01, ge=0, le=1)
    task_retries: int = Field(3, ge=0, description="Ray retries of a shard task (system and application errors)")
    storage_options: dict[str, Any] = Field(default_factory=dict, description="fsspec options of the output")
    dedup: DedupConfig | None = Field(None, description="run the dedup stage after sharding (sharding.dedup)")

    def sample_spec(self) -> SampleSpec:
        return SampleSpec(self.num_points, self.dtype, self.max_faces, self.max_vertices, self.min_points)

    def limits(self) -> Limits:
        return Limits(self.time_limit_s, self.max_bytes)

    def config_hash(self) -> str:
        """Hash of everything that determines shard contents (not where they go, nor credentials)."""
        content = self.model_dump(
            exclude={"output", "storage_options", "max_failure_ratio", "task_retries", "dedup"},
        )
        for source in content["sources"]:
            source.pop("storage_options")
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def load_sharding_config(path: str | os.PathLike | None, flags: Mapping[str, Any] | None = None,
                         sources: Sequence[SourceConfig] = ()) -> ShardingConfig:
    """The YAML file (optional) with flag values over it (None: flag not given) and `sources` after its own.

    A bad file, key or value raises `ConfigError` naming the key, what is allowed there and a close match.
    """
    overrides = [_override(key, value) for key, value in (flags or {}).items() if value is not None]
    cfg = load_config(ShardingConfig, path, overrides, what="sharding config")
    if sources:
        cfg = cfg.model_copy(update={"sources": [*cfg.sources, *sources]})
    return cfg


def _override(key: str, value: Any) -> str:
    """`key=value` with the value written as YAML, which the override parser reads back as `value`."""
    text = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, width=float("inf"))
    return f"{key}={text.removesuffix(YAML_DOCUMENT_END).strip()}"

