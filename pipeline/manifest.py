"""Dataset manifests (the `manifest.json` that `sharding.shard_corpus` writes), read and validated.

The loader trusts nothing it has not checked: a missing, unparsable or malformed manifest is an
error that names the file and the offending key (the schema is `sharding.manifest.ShardManifest`).
Shard URLs are resolved relative to the manifest's location, so a dataset can be moved or mirrored
(local <-> s3://) as a whole. Samples the manifest excludes stay in the shards but are not counted as
samples to read.
"""

from __future__ import annotations

import hashlib
import posixpath
from dataclasses import dataclass, field

import fsspec

from sharding.manifest import ManifestError, ShardManifest, parse_document

__all__ = ["Manifest", "ManifestError", "ShardInfo", "load_manifest", "parse_manifest"]


@dataclass(frozen=True)
class ShardInfo:
    url: str  # absolute: local path or fsspec URL
    nsamples: int
    filesize: int | None
    sha256: str | None
    excluded: tuple[int, ...] = ()  # indices (tar order, increasing) of the samples not to read


@dataclass(frozen=True)
class Manifest:
    url: str
    shards: tuple[ShardInfo, ...]  # the shards of the split asked for
    digest: str  # sha256 of the manifest bytes: identifies the dataset version in logs and checkpoints
    document: ShardManifest = field(compare=False)  # the whole validated manifest, every split

    @property
    def num_samples(self) -> int:
        """The samples to read: those of the shards, less the excluded ones."""
        return sum(s.nsamples - len(s.excluded) for s in self.shards)


def _resolve(base: str, url: str) -> str:
    if "://" in url or url.startswith("/"):
        return url
    return posixpath.join(posixpath.dirname(base), url)


def parse_manifest(data: bytes, url: str, split: str | None = "train") -> Manifest:
    """Validate manifest bytes; keep the shards of `split` (None: all splits)."""
    document = parse_document(data, url)
    shards = tuple(ShardInfo(_resolve(url, entry.url), entry.nsamples, entry.filesize, entry.sha256,
                             tuple(entry.excluded))
                   for entry in document.shardlist if split is None or entry.split == split)
    manifest = Manifest(url, shards, hashlib.sha256(data).hexdigest(), document)
    if manifest.num_samples == 0:
        excluded = sum(len(s.excluded) for s in shards)
        raise ManifestError(f"manifest {url}: no samples in split {split!r}"
                            + (f" (all {excluded} are excluded)" if excluded else ""))
    return manifest


def load_manifest(url: str, storage_options: dict | None = None, split: str | None = "train") -> Manifest:
    """Read and validate `url` (a manifest.json, or the dataset directory holding one)."""
    if not url.endswith(".json"):
        url = posixpath.join(url.rstrip("/"), "manifest.json")
    try:
        with fsspec.open(url, "rb", **(storage_options or {})) as f:
            data = f.read()
    except FileNotFoundError:
        raise ManifestError(f"manifest not found: {url}") from None
    return parse_manifest(data, url, split)
