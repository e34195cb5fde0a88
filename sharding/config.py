"""Typed configuration of a sharding job: a YAML file under configs/data/ and/or command-line flags."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sharding.limits import Limits
from sharding.sampling import SampleSpec
from sharding.sources import SourceSpec


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SourceConfig(StrictModel):
    kind: str
    path: str = Field(description="directory, archive or URL; for `synthetic` the number of shapes")
    name: str = Field("", description="key prefix and count bucket (default: the kind)")
    options: dict[str, Any] = Field(default_factory=dict)
    storage_options: dict[str, Any] = Field(default_factory=dict, description="fsspec options; never logged")

    def spec(self) -> SourceSpec:
        return SourceSpec(self.kind, self.path, self.name, dict(self.options), dict(self.storage_options))


class ShardingConfig(StrictModel):
    sources: list[SourceConfig] = Field(default_factory=list)
    output: str | None = None
    shard_size: int = Field(1000, ge=1)
    num_points: int = Field(16384, ge=1)
    dtype: Literal["float32", "float16"] = "float32"
    min_points: int = Field(1, ge=1, description="reject point clouds with fewer points")
    max_faces: int = Field(5_000_000, ge=1)
    max_vertices: int = Field(10_000_000, ge=1)
    max_bytes: int = Field(1 << 30, ge=1, description="reject raw inputs larger than this before decoding")
    time_limit_s: float = Field(120.0, ge=0, description="per-shape decode + sampling time limit (0: none)")
    max_failure_ratio: float = Field(0.01, ge=0, le=1)
    task_retries: int = Field(3, ge=0, description="Ray retries of a shard task (system and application errors)")
    storage_options: dict[str, Any] = Field(default_factory=dict, description="fsspec options of the output")

    def sample_spec(self) -> SampleSpec:
        return SampleSpec(self.num_points, self.dtype, self.max_faces, self.max_vertices, self.min_points)

    def limits(self) -> Limits:
        return Limits(self.time_limit_s, self.max_bytes)

    def config_hash(self) -> str:
        """Hash of everything that determines shard contents (not where they go, nor credentials)."""
        content = self.model_dump(
            exclude={"output", "storage_options", "max_failure_ratio", "task_retries"},
        )
        for source in content["sources"]:
            source.pop("storage_options")
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def load_sharding_config(path: str | Path | None, overrides: dict[str, Any]) -> ShardingConfig:
    """YAML file (optional) updated with command-line values; errors name the key and allowed values."""
    data: dict[str, Any] = {}
    source = "command line"
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise SystemExit(f"sharding config not found: {path}")
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise SystemExit(f"invalid sharding config ({path}): top level must be a mapping")
        source = str(path)
    extra_sources = overrides.pop("sources", [])
    data.update({k: v for k, v in overrides.items() if v is not None})
    data["sources"] = list(data.get("sources", [])) + extra_sources
    try:
        return ShardingConfig.model_validate(data)
    except ValidationError as err:
        lines = [f"invalid sharding config ({source}):"]
        for e in err.errors():
            key = ".".join(str(p) for p in e["loc"])
            lines.append(f"  {key}: {'unknown key' if e['type'] == 'extra_forbidden' else e['msg']}")
        raise SystemExit("\n".join(lines)) from None
