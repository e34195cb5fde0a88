"""Where the CLI's shapes come from: a sharded dataset (what pretraining read) or the synthetic generator.

The synthetic generator builds meshes with trimesh, which comes with the `sharding` extra, so it is
imported only when a synthetic shape is asked for: everything else here works with the `train` extra.
"""

from __future__ import annotations

import numpy as np

from configuration.extras import require
from launch.pictures.sample import Shape
from pipeline.manifest import load_manifest
from pipeline.shards import ShardStore


def synthetic_shape(index: int, seed: int = 0, num_points: int | None = None) -> Shape:
    """Shape `index` of the synthetic corpus `seed`, surface-sampled as the sharding job stores it
    (`num_points` defaults to the sharding job's)."""
    if index < 0:
        raise ValueError(f"synthetic shape index must be >= 0, got {index}")
    generate_shape = require("sharding.synthetic", "sharding").generate_shape
    from sharding.records import Loaded
    from sharding.sampling import SampleSpec, make_points

    spec = SampleSpec() if num_points is None else SampleSpec(num_points=num_points)
    mesh, family = generate_shape(index, seed)
    points = make_points(Loaded(mesh, "", y_up=False), f"{index:07d}", spec).points
    return Shape(f"synthetic shape {index} ({family})", points.astype(np.float32))


def shard_shape(dataset: str, index: int, split: str = "train", storage_options: dict | None = None) -> Shape:
    """Sample `index` (counted over the manifest's shards in order, excluded samples included) of a sharded
    dataset, local or remote."""
    manifest = load_manifest(dataset, storage_options, split)
    ends = np.cumsum([s.nsamples for s in manifest.shards])
    if not 0 <= index < ends[-1]:
        raise ValueError(f"sample index {index} is out of range: {manifest.url} holds {ends[-1]} samples")
    shard = int(np.searchsorted(ends, index, side="right"))
    store = ShardStore(storage_options=storage_options)
    try:
        sample = store.sample(manifest.shards[shard], index - (int(ends[shard - 1]) if shard else 0))
    finally:
        store.close()
    label = sample.meta.get("label")
    return Shape(sample.key + (f" ({label})" if label else ""), np.asarray(sample.points, dtype=np.float32))
