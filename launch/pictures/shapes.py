"""Where the CLI's shapes come from: a sharded dataset (what pretraining read) or the synthetic generator."""

from __future__ import annotations

import numpy as np

from launch.pictures.sample import Shape
from pipeline.manifest import load_manifest
from pipeline.shards import ShardStore
from sharding.records import Loaded
from sharding.sampling import SampleSpec, make_points
from sharding.synthetic import generate_shape


def synthetic_shape(index: int, seed: int = 0, num_points: int = SampleSpec().num_points) -> Shape:
    """Shape `index` of the synthetic corpus `seed`, surface-sampled as the sharding job stores it."""
    if index < 0:
        raise ValueError(f"synthetic shape index must be >= 0, got {index}")
    mesh, family = generate_shape(index, seed)
    points = make_points(Loaded(mesh, "", y_up=False), f"{index:07d}", SampleSpec(num_points=num_points))
    return Shape(f"synthetic shape {index} ({family})", points.astype(np.float32))


def shard_shape(dataset: str, index: int, split: str = "train", storage_options: dict | None = None) -> Shape:
    """Sample `index` (counted over the manifest's shards in order) of a sharded dataset, local or remote."""
    manifest = load_manifest(dataset, storage_options, split)
    if not 0 <= index < manifest.num_samples:
        raise ValueError(f"sample index {index} is out of range: {manifest.url} holds {manifest.num_samples} samples")
    ends = np.cumsum([s.nsamples for s in manifest.shards])
    shard = int(np.searchsorted(ends, index, side="right"))
    store = ShardStore(storage_options=storage_options)
    try:
        sample = store.sample(manifest.shards[shard], index - (int(ends[shard - 1]) if shard else 0))
    finally:
        store.close()
    label = sample.meta.get("label")
    return Shape(sample.key + (f" ({label})" if label else ""), np.asarray(sample.points, dtype=np.float32))
