"""Dataset manifests (wids-shard-index-v1, as written by `sharding.shard_corpus`).

The loader trusts nothing it has not checked: a missing, unparsable or malformed manifest is an
error that names the file and the offending field. Shard URLs are resolved relative to the
manifest's location, so a dataset can be moved or mirrored (local <-> s3://) as a whole.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from dataclasses import dataclass

import fsspec

KIND = "wids-shard-index-v1"


class ManifestError(ValueError):
    """A manifest that cannot be used; the message names the file and the field."""


@dataclass(frozen=True)
class ShardInfo:
    url: str  # absolute: local path or fsspec URL
    nsamples: int
    filesize: int | None
    sha256: str | None


@dataclass(frozen=True)
class Manifest:
    url: str
    shards: tuple[ShardInfo, ...]
    digest: str  # sha256 of the manifest bytes: identifies the dataset version in logs and checkpoints

    @property
    def num_samples(self) -> int:
        return sum(s.nsamples for s in self.shards)


def _resolve(base: str, url: str) -> str:
    if "://" in url or url.startswith("/"):
        return url
    return posixpath.join(posixpath.dirname(base), url)


def _field(entry: dict, name: str, kind: type, where: str, optional: bool = False):
    value = entry.get(name)
    if value is None and optional:
        return None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ManifestError(f"{where}.{name}: expected {kind.__name__}, got {value!r}")
    return value


def parse_manifest(data: bytes, url: str, split: str | None = "train") -> Manifest:
    """Validate manifest bytes; keep the shards of `split` (None: all splits)."""
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ManifestError(f"manifest {url}: not valid JSON ({err})") from None
    if not isinstance(doc, dict) or doc.get("__kind__") != KIND:
        got = doc.get("__kind__") if isinstance(doc, dict) else type(doc).__name__
        raise ManifestError(f"manifest {url}: __kind__ must be {KIND!r}, got {got!r}")
    shardlist = doc.get("shardlist")
    if not isinstance(shardlist, list):
        raise ManifestError(f"manifest {url}: shardlist must be a list, got {type(shardlist).__name__}")
    shards = []
    for i, entry in enumerate(shardlist):
        where = f"manifest {url}: shardlist[{i}]"
        if not isinstance(entry, dict):
            raise ManifestError(f"{where}: expected an object, got {entry!r}")
        if split is not None and entry.get("split", "train") != split:
            continue
        nsamples = _field(entry, "nsamples", int, where)
        if nsamples < 0:
            raise ManifestError(f"{where}.nsamples: must be >= 0, got {nsamples}")
        shards.append(
            ShardInfo(
                url=_resolve(url, _field(entry, "url", str, where)),
                nsamples=nsamples,
                filesize=_field(entry, "filesize", int, where, optional=True),
                sha256=_field(entry, "sha256", str, where, optional=True),
            )
        )
    if not shards or sum(s.nsamples for s in shards) == 0:
        raise ManifestError(f"manifest {url}: no samples in split {split!r}")
    return Manifest(url, tuple(shards), hashlib.sha256(data).hexdigest())


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
