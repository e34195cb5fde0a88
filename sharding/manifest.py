"""The `manifest.json` a sharding job writes next to its shards: one schema for the writer and every reader.

It is a wids shard index (`wids-shard-index-v1`: shard files with their sample counts) plus the job's
accounting: totals, per-source and per-split counts, the sample format, and the hashes of the config
and plan that made it. A deduplicated dataset (`sharding.dedup`) also lists, per shard, the samples
training must skip (duplicates of earlier samples, copies of evaluation test shapes): they stay in the
tars and in the sample counts, and are counted again as `excluded`. Only pydantic and `configuration`
are imported, so the pipeline and evaluation read manifests without the sharding extra (trimesh, Ray).
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import Field, StrictInt, StrictStr, ValidationError, model_validator

from configuration import StrictModel, format_validation_error

KIND = "wids-shard-index-v1"
SAMPLE_FORMAT = "<key>.points.npy + <key>.json"

Count = Annotated[StrictInt, Field(ge=0)]  # JSON integers only: "8", 8.0 and true are errors


class ManifestError(ValueError):
    """A manifest that cannot be used; the message names the file and the key."""


class ShardEntry(StrictModel):
    """One shard: its file (relative to the manifest), its samples, its size and sha256, its split."""

    url: StrictStr
    nsamples: Count
    filesize: Count | None = None  # None: not checked before use (the tar structure still is)
    sha256: Annotated[StrictStr, Field(pattern="^[0-9a-f]{64}$")] | None = None
    split: StrictStr
    excluded: list[Count] = Field(default_factory=list, description=(
        "indices (tar order, increasing) of this shard's samples that training skips"))

    @model_validator(mode="after")
    def _excluded_are_samples(self) -> ShardEntry:
        if any(b <= a for a, b in zip(self.excluded, self.excluded[1:])):
            raise ValueError(f"shard {self.url}: excluded indices must be increasing and distinct")
        if self.excluded and self.excluded[-1] >= self.nsamples:
            raise ValueError(f"shard {self.url}: excluded index {self.excluded[-1]} is past its "
                             f"{self.nsamples} samples")
        return self


class SourceCounts(StrictModel):
    inputs: Count
    samples: Count
    failed: Count
    excluded: Count = 0  # of the samples


class SplitCounts(StrictModel):
    shards: Count
    samples: Count
    excluded: Count = 0  # of the samples


class Deduplication(StrictModel):
    """How the exclusions were decided: the report file (relative to the manifest) with every group and
    match, its sha256, the matching settings, and the excluded samples by reason."""

    report: StrictStr
    report_sha256: Annotated[StrictStr, Field(pattern="^[0-9a-f]{64}$")]
    tolerance: float
    test_sets: list[StrictStr]
    excluded: dict[Literal["duplicate", "test-set"], Count]


class SampleFormat(StrictModel):
    num_points: Annotated[StrictInt, Field(ge=1)]
    dtype: Literal["float32", "float16"]
    format: StrictStr


class ShardManifest(StrictModel):
    """The whole manifest; every input of the job is a sample or a failure."""

    kind: Literal["wids-shard-index-v1"] = Field(KIND, alias="__kind__")
    wids_version: Literal[1] = 1
    shardlist: list[ShardEntry]
    total_inputs: Count
    total_samples: Count
    total_failed: Count
    sources: dict[str, SourceCounts]
    splits: dict[str, SplitCounts]
    sample: SampleFormat
    config_hash: StrictStr
    plan_hash: StrictStr
    tool_version: StrictStr
    total_excluded: Count = 0  # samples training skips, of total_samples (listed per shard)
    deduplication: Deduplication | None = None

    @model_validator(mode="after")
    def _every_input_accounted_for(self) -> ShardManifest:
        if self.total_inputs != self.total_samples + self.total_failed:
            raise ValueError(f"accounting error: {self.total_inputs} inputs != {self.total_samples} samples"
                             f" + {self.total_failed} failed")
        listed = sum(len(entry.excluded) for entry in self.shardlist)
        for what, count in (("listed in the shards", listed),
                            ("counted by source", sum(c.excluded for c in self.sources.values())),
                            ("counted by split", sum(c.excluded for c in self.splits.values())),
                            ("counted by reason", sum(self.deduplication.excluded.values())
                             if self.deduplication else 0)):
            if count != self.total_excluded:
                raise ValueError(f"accounting error: total_excluded is {self.total_excluded}, but {count} "
                                 f"samples are excluded {what}")
        return self

    def to_json(self) -> dict[str, Any]:
        """The JSON object written to manifest.json (keys as on disk: `__kind__`)."""
        return self.model_dump(mode="json", by_alias=True)


def parse_document(data: bytes, url: str) -> ShardManifest:
    """Manifest bytes read from `url`, validated; a `ManifestError` naming the file and the key if not."""
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ManifestError(f"manifest {url}: not valid JSON ({err})") from None
    if not isinstance(doc, dict) or doc.get("__kind__") != KIND:
        got = doc.get("__kind__") if isinstance(doc, dict) else type(doc).__name__
        raise ManifestError(f"manifest {url}: __kind__ must be {KIND!r}, got {got!r}")
    try:
        return ShardManifest.model_validate(doc)
    except ValidationError as err:
        raise ManifestError(format_validation_error(err, url, ShardManifest, "manifest")) from None
