"""Turn decoded geometry into the stored point cloud: `num_points` xyz points, Z-up, in `dtype`.

Meshes get area-weighted uniform surface sampling (as the reference's trimesh `sample_surface`),
written here in plain numpy on 1-D coordinate arrays, since it is the hot path of sharding. Point
clouds with more points than `num_points` are randomly subsampled without replacement; smaller ones
are kept whole.

A mesh whose faces carry semantic parts (`MeshData.face_parts`) gives each point the part of the face
it was drawn on, from the same draws: labelling changes no point.

Every random draw comes from `np.random.default_rng(seed_from_key(key))`, so re-running a shard
gives bit-identical points no matter which worker or process samples it. Bad inputs are never
repaired silently: they raise `ShapeError` with the stage that rejected them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

import numpy as np

from sharding.layouts import Z_UP_FROM_Y_UP
from sharding.records import Loaded, MeshData, PointData, ShapeError


# The points of one global crop in the default pipeline (pipeline.config: 1024 points, 64 patches of 32).
# A cloud with fewer is the whole of every crop cut from it, zero-padded: garbage, not a sample.
MIN_POINTS = 1024


@dataclass(frozen=True)
class SampleSpec:
    num_points: int = 16384
    dtype: Literal["float32", "float16"] = "float32"
    max_faces: int = 5_000_000  # larger meshes are rejected before any sampling work (bounds task memory)
    max_vertices: int = 10_000_000
    min_points: int = MIN_POINTS  # clouds with fewer points (or num_points, if smaller) are rejected

    def __post_init__(self) -> None:
        if self.dtype not in ("float32", "float16"):
            raise ValueError(f"dtype must be 'float32' or 'float16', got {self.dtype!r}")
        if min(self.num_points, self.max_faces, self.max_vertices, self.min_points) < 1:
            raise ValueError(f"num_points, max_faces, max_vertices and min_points must be >= 1: {self}")


def seed_from_key(key: str) -> int:
    """A 64-bit seed from the sample key; sha256 rather than hash(), which is salted per process."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "little")


def _doubled_face_areas(coords: np.ndarray, corners: np.ndarray) -> np.ndarray:
    """|(b - a) x (c - a)| per face from (3, V) coordinates and (3, F) corner indices."""
    ax, ay, az = (coords[k].take(corners[0]) for k in range(3))
    bx, by, bz = (coords[k].take(corners[1]) - a for k, a in enumerate((ax, ay, az)))
    cx, cy, cz = (coords[k].take(corners[2]) - a for k, a in enumerate((ax, ay, az)))
    x = by * cz - bz * cy
    y = bz * cx - bx * cz
    z = bx * cy - by * cx
    return np.sqrt(x * x + y * y + z * z)


@dataclass(frozen=True)
class Cloud:
    """A stored point cloud, with each point's part where the mesh it was sampled from has parts."""

    points: np.ndarray  # (n, 3) in the spec's dtype
    parts: np.ndarray | None = None  # (n,) uint8 index into part_names
    part_names: tuple[str, ...] = ()


def sample_surface(vertices: np.ndarray, faces: np.ndarray, n: int,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """`n` points drawn uniformly from the surface area of a mesh with in-range face indices.

    Returns the (n, 3) float64 points and the (n,) index of the face each point lies on.

    A face is chosen with probability proportional to its area (inverse CDF: uniform draws searched in
    the float64 cumulative sum of areas, exact enough for meshes of millions of faces), then a uniform
    point inside it from barycentric coordinates (1 - sqrt(r1), sqrt(r1) (1 - r2), sqrt(r1) r2).
    Zero-area faces are never chosen. Raises ShapeError("validate") when the total area is zero or
    not finite. Works on (3, V) / (3, F) transposes: 1-D `take` gathers are the fast path in numpy.
    """
    coords = np.ascontiguousarray(vertices.T, dtype=np.float64)
    corners = np.ascontiguousarray(faces.T)
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported below, as a non-finite area
        cumulative = np.cumsum(_doubled_face_areas(coords, corners))
    total = float(cumulative[-1]) if len(cumulative) else 0.0
    if not (np.isfinite(total) and total > 0):
        raise ShapeError("validate", f"total surface area is {total / 2:g} ({len(faces)} faces)")
    draws = np.sort(rng.random(n)) * total  # sorted: searchsorted then walks `cumulative` in order
    chosen = np.searchsorted(cumulative, draws, side="right")
    # A draw that rounds up to `total` would fall past the end: send it to the last face with area.
    np.minimum(chosen, np.searchsorted(cumulative, total, side="left"), out=chosen)
    rng.shuffle(chosen)  # i.i.d. order again, so no prefix of the cloud is biased to low face indices
    r1, r2 = rng.random((2, n))
    s = np.sqrt(r1)
    wa, wb, wc = 1.0 - s, s * (1.0 - r2), s * r2
    a, b, c = corners.take(chosen, axis=1)
    points = np.empty((n, 3))
    for k, x in enumerate(coords):
        points[:, k] = wa * x.take(a) + wb * x.take(b) + wc * x.take(c)
    return points, chosen


def _check_mesh(mesh: MeshData, spec: SampleSpec) -> None:
    """Limits first (cheap, before touching the arrays' contents), then what would make sampling wrong."""
    vertices, faces = mesh.vertices, mesh.faces
    if len(faces) > spec.max_faces:
        raise ShapeError("limits", f"{len(faces)} faces > max_faces {spec.max_faces}")
    if len(vertices) > spec.max_vertices:
        raise ShapeError("limits", f"{len(vertices)} vertices > max_vertices {spec.max_vertices}")
    if vertices.ndim != 2 or vertices.shape[1] != 3:
        raise ShapeError("validate", f"vertices must be (V, 3), got {vertices.shape}")
    if faces.ndim != 2 or faces.shape[1] != 3 or faces.dtype.kind not in "iu":
        raise ShapeError("validate", f"faces must be (F, 3) integers, got {faces.dtype} {faces.shape}")
    if len(faces) == 0:
        raise ShapeError("validate", "mesh has no faces")
    if not np.isfinite(vertices).all():
        bad = np.count_nonzero(~np.isfinite(vertices))
        raise ShapeError("validate", f"{bad} non-finite vertex coordinates")
    if faces.min() < 0 or faces.max() >= len(vertices):
        bad = np.count_nonzero((faces < 0) | (faces >= len(vertices)))
        raise ShapeError("validate", f"{bad} face indices out of range [0, {len(vertices)})")
    if mesh.face_parts is not None:
        _check_parts(mesh.face_parts, len(faces), mesh.part_names)


def _check_parts(face_parts: np.ndarray, num_faces: int, names: tuple[str, ...]) -> None:
    """One part per face, each naming one of at most 256 parts (stored per point as uint8)."""
    if face_parts.shape != (num_faces,) or face_parts.dtype.kind not in "iu":
        raise ShapeError("validate", f"face parts must be ({num_faces},) integers, "
                                     f"got {face_parts.dtype} {face_parts.shape}")
    if not 0 < len(names) <= 256:
        raise ShapeError("validate", f"{len(names)} part names, must be 1 to 256")
    if face_parts.min() < 0 or face_parts.max() >= len(names):
        raise ShapeError("validate", f"face parts out of range [0, {len(names)})")


def _subsample_points(cloud: PointData, key: str, spec: SampleSpec) -> np.ndarray:
    points = cloud.points
    if points.ndim != 2 or points.shape[1] != 3:
        raise ShapeError("validate", f"points must be (N, 3), got {points.shape}")
    if not np.isfinite(points).all():
        bad = np.count_nonzero(~np.isfinite(points))
        raise ShapeError("validate", f"{bad} non-finite point coordinates")
    if len(points) <= spec.num_points:
        return points
    rng = np.random.default_rng(seed_from_key(key))
    return points[rng.choice(len(points), spec.num_points, replace=False)]


def _encode(points: np.ndarray, dtype: str) -> np.ndarray:
    """Cast to the stored dtype; coordinates beyond its range would become inf, so they are an error."""
    with np.errstate(over="ignore"):
        out = points.astype(dtype, order="C")
    if not np.isfinite(out).all():
        peak, limit = float(np.abs(points).max()), float(np.finfo(dtype).max)
        raise ShapeError("encode", f"coordinates up to {peak:g} exceed the {dtype} range (max {limit:g})")
    return out


def make_points(loaded: Loaded, key: str, spec: SampleSpec) -> Cloud:
    """The stored point cloud of one input: (n, 3) finite `spec.dtype`, Z-up, deterministic in `key`.

    n is `spec.num_points` for meshes and min(N, num_points) for a cloud of N points; fewer than
    min(min_points, num_points) points is a "filter" failure. Meshes with face parts give per-point
    parts too; other inputs give `parts=None`.
    """
    geometry = loaded.geometry
    parts, names = None, ()
    if isinstance(geometry, MeshData):
        _check_mesh(geometry, spec)
        rng = np.random.default_rng(seed_from_key(key))
        points, chosen = sample_surface(geometry.vertices, geometry.faces, spec.num_points, rng)
        if geometry.face_parts is not None:
            parts, names = geometry.face_parts.take(chosen).astype(np.uint8), tuple(geometry.part_names)
    elif isinstance(geometry, PointData):
        points = _subsample_points(geometry, key, spec)
    else:
        raise ShapeError("validate", f"unsupported geometry type {type(geometry).__name__}")
    least = min(spec.min_points, spec.num_points)
    if len(points) < least:
        raise ShapeError("filter", f"{len(points)} points < min_points {least}")
    if loaded.y_up:
        points = points[:, Z_UP_FROM_Y_UP]
    return Cloud(_encode(points, spec.dtype), parts, names)
