"""Geometry helpers every mesh decoder shares: polygon triangulation and the mesh-or-cloud decision."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from sharding.records import Geometry, MeshData, PointData, ShapeError


def broken(name: str, sentence: str) -> ShapeError:
    """The decode error for `name`: a sentence that says what is wrong with the file, never its content."""
    return ShapeError("decode", f"{name}: {sentence}")


def read_or_sentence(parse: Callable[[bytes, str], Geometry], data: bytes, name: str, fmt: str) -> Geometry:
    """`parse(data, name)`, with any parser error it did not foresee turned into a sentence as a last resort.

    Each failure foreseen has its own sentence, and the tests check that mutated files never get here. A
    MemoryError is left to propagate: it is no fault of the file.
    """
    try:
        return parse(data, name)
    except (ArithmeticError, LookupError, TypeError, ValueError) as err:
        raise broken(name, f"it does not parse as {fmt} ({type(err).__name__})") from None


def fan_triangles(indices: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """(F, 3) triangles of polygons stored as flat vertex `indices` and per-polygon `counts` (each >= 3).

    Polygon p with corners (v0, v1, ..., vk-1) becomes the fan (v0, vj, vj+1) for j = 1..k-2, the
    triangulation OBJ, OFF and PLY writers assume for convex faces. Triangles keep the polygon order.
    """
    counts = np.asarray(counts, dtype=np.int64)
    if len(counts) == 0:
        return np.empty((0, 3), dtype=np.int64)
    indices = np.asarray(indices, dtype=np.int64)
    if counts.min() == counts.max() == 3:
        return indices.reshape(-1, 3)
    starts = np.cumsum(counts) - counts
    per_polygon = counts - 2
    first = np.repeat(starts, per_polygon)
    step = np.arange(len(first)) - np.repeat(np.cumsum(per_polygon) - per_polygon, per_polygon) + 1
    return np.stack([indices[first], indices[first + step], indices[first + step + 1]], axis=1)


def mesh_or_cloud(name: str, vertices: np.ndarray, faces: np.ndarray) -> Geometry:
    """A mesh when there are faces, a point cloud of the vertices when there are none (scans, photogrammetry)."""
    vertices = np.asarray(vertices, dtype=np.float64).reshape(-1, 3)
    if len(vertices) == 0:
        raise broken(name, "the file holds no vertices")
    if len(faces) == 0:
        return PointData(vertices)
    return MeshData(vertices, np.asarray(faces, dtype=np.int64).reshape(-1, 3))
