"""Pipeline fixtures: small real datasets written by the sharding job."""

from __future__ import annotations

from pathlib import Path

import pytest

from sharding.shard_corpus import main as shard_corpus


@pytest.fixture(scope="session")
def synthetic_shards(tmp_path_factory, local_ray) -> Path:
    """24 synthetic shapes in 3 shards of 8, with manifest (read-only: copy to modify)."""
    out = tmp_path_factory.mktemp("pipeline") / "synthetic"
    assert shard_corpus(["--source", "synthetic:24", "--output", str(out), "--shard-size", "8", "--no-progress"]) == 0
    return out


@pytest.fixture(scope="session")
def uneven_shards(tmp_path_factory, local_ray) -> Path:
    """20 synthetic shapes in shards of 7, 7 and 6 samples (read-only: copy to modify)."""
    out = tmp_path_factory.mktemp("pipeline") / "uneven"
    assert shard_corpus(["--source", "synthetic:20", "--output", str(out), "--shard-size", "8", "--no-progress"]) == 0
    return out
