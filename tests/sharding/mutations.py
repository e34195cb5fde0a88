"""Seeded mutations of valid files (bytes changed, cut, inserted): inputs a decoder must refuse with one of
its sentences, or read into a well-formed mesh, but never crash on."""

from __future__ import annotations

import random
from collections.abc import Iterator

import numpy as np

from sharding.records import MeshData, PointData

# Tokens that probe the checks: signs, overflow, non-numbers, line breaks, header keywords, non-ASCII.
TOKENS = (b"-1", b"0", b"3", b"1e9", b"nan", b"x", b"4294967295", b"-128", b"2.5", b"\n", b" ", b"\r", b"#",
          b"list", b"property", b"element", b"\xff", b"99999999999999999999")


def mutations(seeds: list[bytes], count: int, seed: int = 0) -> Iterator[bytes]:
    """`count` files, each a seed with one to four random edits."""
    rng = random.Random(seed)
    for _ in range(count):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(data) + 1)
            edit = rng.random()
            if edit < 0.3 and at < len(data):
                data[at] = rng.randrange(256)
            elif edit < 0.45:
                del data[at:]
            elif edit < 0.7:
                data[at:at] = rng.choice(TOKENS)
            elif edit < 0.85:
                data[at:at + rng.randint(1, 8)] = rng.choice(TOKENS)
            else:
                data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 6)))
        yield bytes(data)


def assert_well_formed(geometry: MeshData | PointData) -> None:
    """float64 (N, 3) points; int64 (F, 3) faces that refer to existing vertices."""
    points = geometry.vertices if isinstance(geometry, MeshData) else geometry.points
    assert points.dtype == np.float64 and points.ndim == 2 and points.shape[1] == 3 and len(points)
    if isinstance(geometry, MeshData):
        assert geometry.faces.dtype == np.int64 and geometry.faces.ndim == 2 and geometry.faces.shape[1] == 3
        assert len(geometry.faces) and 0 <= geometry.faces.min() and geometry.faces.max() < len(points)
