"""Fingerprints that find the same shape twice: exact copies, and near-copies under rotation, scale,
resampling and jitter.

* `exact_fingerprint(vertices)`: sha256 of the geometry's distinct vertices, rounded to float32 (the
  precision of GLB and binary PLY), centred on their bounding box, scaled to it, quantised to 2^-16 of
  its size and sorted. A re-export of the same mesh at the same precision (another vertex order,
  duplicated seam vertices, a shift or a uniform scale) has the same fingerprint; any other change
  does not.
* `shape_descriptor(points)`: a rotation-, scale- and sampling-invariant vector of a point cloud: the
  D2 shape distribution (Osada et al., "Shape Distributions", 2002: the distribution of distances
  between random point pairs), the distribution of distances to the centroid, both over the RMS radius
  and stored as cumulative distributions scaled by their bin width, and the principal variances as
  fractions of their sum. The L1 `distance` between two descriptors is then the earth mover's distance
  between their distance distributions (plus the variance difference), which sampling noise moves
  far less than it moves histogram bins. Two clouds are near-duplicates when it is under a tolerance,
  measured in BENCHMARKS.md ("near-duplicates").

Both are deterministic: the same input gives the same bytes.
"""

from __future__ import annotations

import hashlib

import numpy as np
from scipy.spatial import cKDTree

from sharding.layouts import Z_UP_FROM_Y_UP
from sharding.records import Geometry, MeshData

D2_BINS, D2_RANGE = 32, 2.5  # pair distances over the RMS radius: at most 2 x max radius / RMS radius
RADIAL_BINS, RADIAL_RANGE = 16, 2.0
PAIRS = 65536  # pairs drawn for D2
RADIAL_POINTS = 16384
SEED = 0x5EED
DESCRIPTOR_SIZE = D2_BINS + RADIAL_BINS + 3
DEFAULT_TOLERANCE = 0.03  # BENCHMARKS.md, "Duplicates and test-set leakage"
GRID = 1 << 16  # quantisation steps across the largest side of the bounding box
GRID_BITS = 17  # bits of one quantised coordinate (0..GRID)


def exact_fingerprint(vertices: np.ndarray) -> str:
    """Hex sha256 of the normalised, quantised, distinct vertex set (see the module docstring)."""
    axes = np.asarray(vertices, dtype=np.float32).reshape(-1, 3).T.astype(np.float64, order="C")  # (3, V)
    low, high = axes.min(axis=1), axes.max(axis=1)
    size = float((high - low).max()) or 1.0
    grid = np.round((axes - ((low + high) / 2)[:, None]) / size * GRID).astype(np.int64) + GRID // 2  # 0..GRID
    packed = np.sort((grid[0] << 2 * GRID_BITS) | (grid[1] << GRID_BITS) | grid[2])  # one int64 per vertex
    distinct = packed[np.concatenate([[True], packed[1:] != packed[:-1]])]
    return hashlib.sha256(distinct.tobytes()).hexdigest()


def geometry_fingerprint(geometry: Geometry, y_up: bool) -> str:
    """`exact_fingerprint` of a decoded mesh's vertices or cloud's points, in the Z-up axes samples are stored in."""
    coordinates = geometry.vertices if isinstance(geometry, MeshData) else geometry.points
    return exact_fingerprint(coordinates[:, Z_UP_FROM_Y_UP] if y_up else coordinates)


def shape_descriptor(points: np.ndarray) -> np.ndarray:
    """(DESCRIPTOR_SIZE,) float32: D2 and radial cumulative distributions (times their bin widths), and the
    principal variance fractions."""
    coordinates = np.asarray(points).reshape(-1, 3).T.astype(np.float64, order="C")  # (3, N): rows contiguous
    count = coordinates.shape[1]
    rng = np.random.default_rng(SEED)
    centred = coordinates - coordinates.mean(axis=1, keepdims=True)
    rms = float(np.sqrt((centred * centred).sum() / count)) or 1.0
    centred /= rms
    axes = centred.astype(np.float32)
    first, second = rng.integers(0, count, size=(2, PAIRS))
    d2 = _cumulative(_norms(axes.take(first, axis=1) - axes.take(second, axis=1)), D2_BINS, D2_RANGE)
    chosen = axes.take(rng.integers(0, count, size=RADIAL_POINTS), axis=1)
    radial = _cumulative(_norms(chosen), RADIAL_BINS, RADIAL_RANGE)
    variances = np.sort(np.linalg.eigvalsh(np.cov(centred)))[::-1]
    return np.concatenate([d2, radial, variances / variances.sum()]).astype(np.float32)


def _norms(vectors: np.ndarray) -> np.ndarray:
    """Euclidean lengths of the columns of a (3, n) array."""
    return np.sqrt(vectors[0] * vectors[0] + vectors[1] * vectors[1] + vectors[2] * vectors[2])


def _cumulative(values: np.ndarray, bins: int, top: float) -> np.ndarray:
    """The empirical CDF of `values` at `bins` edges up to `top`, times the bin width: L1 between two of
    these is the earth mover's distance between the distributions (values past `top` count at `top`)."""
    index = np.minimum((values * np.float32(bins / top)).astype(np.int64), bins - 1)
    return np.cumsum(np.bincount(index, minlength=bins)) / len(values) * (top / bins)


def distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """L1 distance between descriptors (broadcasting: one against many is one call)."""
    return np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).sum(axis=-1)


def near_pairs(descriptors: np.ndarray, tolerance: float) -> np.ndarray:
    """(P, 2) index pairs i < j with distance(descriptors[i], descriptors[j]) < tolerance.

    A k-d tree over the descriptors finds the pairs within `tolerance` in Euclidean distance, which
    is at most the L1 distance, so no near pair is missed; each candidate is then checked in L1.
    """
    descriptors = np.asarray(descriptors, dtype=np.float64)
    candidates = cKDTree(descriptors).query_pairs(tolerance, output_type="ndarray")
    if len(candidates) == 0:
        return np.empty((0, 2), dtype=np.int64)
    keep = distance(descriptors[candidates[:, 0]], descriptors[candidates[:, 1]]) < tolerance
    pairs = np.sort(candidates[keep], axis=1)
    return pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]
