"""A written dataset as the dedup stage reads it: its manifest, and every sample's fingerprints in manifest
order with the shard and tar position each came from."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from sharding.dedup.sidecar import ShardFingerprints, sidecar_name
from sharding.manifest import ShardManifest, parse_document
from sharding.storage import Output

READ_THREADS = 16  # fingerprint files read at once (they are small; on S3 latency dominates)


@dataclass(frozen=True)
class Corpus:
    """The fingerprints of every sample in manifest order, with where each sample is."""

    keys: np.ndarray
    sources: np.ndarray
    exact: np.ndarray
    descriptors: np.ndarray
    shard: np.ndarray  # (n,) index into the manifest's shardlist
    index: np.ndarray  # (n,) index within the shard (tar order)


class DedupError(ValueError):
    """A dataset whose fingerprints cannot be read or do not fit its manifest; names the file."""


def open_dataset(url: str, storage_options: dict | None = None) -> tuple[Output, ShardManifest]:
    """A dataset written by `sharding.shard_corpus` and its validated manifest."""
    out = Output(url, storage_options, create=False)
    if not out.exists("manifest.json"):
        raise DedupError(f"{out.path('manifest.json')} does not exist: {url} is not a dataset written by "
                         "sharding.shard_corpus (or its job has not finished)")
    return out, parse_document(out.read_bytes("manifest.json"), out.path("manifest.json"))


def read_corpus(out: Output, manifest: ShardManifest, split: str | None = None) -> Corpus:
    """The fingerprint files of every shard (of `split`, when given), checked against the manifest's counts."""
    def read(entry_index: int) -> ShardFingerprints:
        entry = manifest.shardlist[entry_index]
        name = sidecar_name(entry.url)
        if not out.exists(name):
            raise DedupError(f"{out.path(name)} is missing: the shards were written before fingerprints were; "
                             "re-run sharding.shard_corpus with the same config to add them")
        prints = ShardFingerprints.from_bytes(out.read_bytes(name), out.path(name))
        if len(prints) != entry.nsamples:
            raise DedupError(f"{out.path(name)} lists {len(prints)} samples, the manifest's {entry.url} holds "
                             f"{entry.nsamples}")
        return prints

    chosen = [i for i, e in enumerate(manifest.shardlist) if split is None or e.split == split]
    with ThreadPoolExecutor(READ_THREADS) as pool:
        parts = list(pool.map(read, chosen)) or [ShardFingerprints.from_rows([])]
    sizes = [len(p) for p in parts]
    return Corpus(
        keys=np.concatenate([p.keys for p in parts]),
        sources=np.concatenate([p.sources for p in parts]),
        exact=np.concatenate([p.exact for p in parts]),
        descriptors=np.concatenate([p.descriptors for p in parts]),
        shard=np.repeat(np.asarray(chosen or [0], dtype=np.int64), sizes),
        index=np.concatenate([np.arange(size) for size in sizes]),
    )
