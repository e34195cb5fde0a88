"""Loader-side patch indices: exact FPS centres and kNN groups of padded crops, compiled with Numba.

Same semantics as `model.patchify.farthest_point_sample` / `knn_group`: FPS starts at a
given valid point, each step takes the valid point farthest (squared Euclidean, float32) from the chosen
set, ties to the lowest index, and repeats index 0 once a crop runs out of valid points; each centre's
group is its `patch_size` nearest valid points, nearest first (ties to the lowest index), the centre itself
included, and missing neighbours (crops with fewer valid points) are filled with the centre. Distances are
float32 `(dx^2 + dy^2) + dz^2` of exact coordinate differences, as the model computes them (no fused
multiply-add: Numba compiles without fast-math), so for the same start the indices agree bit for bit.
The kernels are compiled once and cached (`pipeline.compiled`).

One call per crop kind does all crops: FPS keeps each centre's distance row (its kNN row too), and kNN keeps
the k smallest `(distance bits << 32) | index` keys of a row, after cutting the row by a threshold proven to
keep at least k of them. BENCHMARKS.md gives the cost of each part and what was tried instead.
"""

from __future__ import annotations

import numpy as np

from pipeline.compiled import compiled
from pipeline.crops import Crops

_SAMPLE_STRIDE = 16  # one key in 16 goes into the threshold sample
_SAMPLE_RANKS = 6  # order statistics of the sample tried as thresholds, smallest first
_NO_THRESHOLD = np.int32(np.iinfo(np.int32).max)  # above every finite distance's bits


@compiled
def _insert_sorted(keys, filled, capacity, key):
    """Insert `key` into the ascending `keys[:filled]`; when full, it replaces the largest (which
    the caller has checked is larger). Returns the new fill."""
    pos = filled if filled < capacity else capacity - 1
    while pos > 0 and keys[pos - 1] > key:
        keys[pos] = keys[pos - 1]
        pos -= 1
    keys[pos] = key
    return filled + 1 if filled < capacity else filled


@compiled
def _count_at_most(row, valid, threshold):
    count = 0
    for j in range(valid):
        count += row[j] <= threshold
    return count


@compiled
def _threshold(row, valid, k, sample):
    """A key t with at least k of `row[:valid]` <= t, and usually fewer than 2k: the smallest order
    statistic of a strided sample of the row that passes an exact count; `_NO_THRESHOLD` if none does."""
    taken = 0
    for j in range(0, valid, _SAMPLE_STRIDE):
        key = np.int64(row[j])
        if taken < _SAMPLE_RANKS or key < sample[_SAMPLE_RANKS - 1]:
            taken = _insert_sorted(sample, taken, _SAMPLE_RANKS, key)
    for r in range(max((k + _SAMPLE_STRIDE - 1) // _SAMPLE_STRIDE, 1) - 1, taken):
        threshold = np.int32(sample[r])
        if _count_at_most(row, valid, threshold) >= k:
            return threshold
    return _NO_THRESHOLD


@compiled
def _farthest_points(xs, ys, zs, valid, start, centers, rows, min_dist):
    """FPS of the first `valid` points of (xs, ys, zs) from `start` into `centers`; `rows[i]` gets the
    squared distances of centre i to every point."""
    min_bits = min_dist.view(np.int32)  # non-negative floats order like their bit patterns
    for j in range(valid):
        min_dist[j] = np.inf
    farthest = start
    for i in range(len(centers)):
        centers[i] = farthest
        cx, cy, cz = xs[farthest], ys[farthest], zs[farthest]
        row = rows[i]
        for j in range(valid):
            dx, dy, dz = xs[j] - cx, ys[j] - cy, zs[j] - cz
            d = dx * dx + dy * dy + dz * dz
            row[j] = d
            m = min_dist[j]
            min_dist[j] = d if d < m else m
        if i + 1 == len(centers):
            break  # the last centre's row is all kNN needs; no next farthest point
        farthest_bits = np.int32(-1)
        for j in range(valid):
            farthest_bits = max(farthest_bits, min_bits[j])
        farthest = 0  # also the repeat once every valid point is a centre (all distances 0)
        for j in range(valid):
            if min_bits[j] == farthest_bits:
                farthest = j
                break


@compiled
def _nearest(keys, valid, centers, groups, nearest, sample):
    """groups[i] = the k nearest of the first `valid` points to centre i, from its distance row keys[i]."""
    k = groups.shape[1]
    kk = min(k, valid)
    sampled = valid >= 4 * kk  # below that the plain scan is cheaper
    for i in range(len(centers)):
        row = keys[i]
        threshold = _threshold(row, valid, kk, sample) if sampled else _NO_THRESHOLD
        filled = 0
        for j in range(valid):
            key = row[j]
            if key <= threshold:
                composite = (np.int64(key) << 32) | j
                if filled < kk or composite < nearest[kk - 1]:
                    filled = _insert_sorted(nearest, filled, kk, composite)
                    if filled == kk:
                        threshold = min(threshold, np.int32(nearest[kk - 1] >> 32))
        for j in range(kk):
            groups[i, j] = nearest[j] & 0xFFFFFFFF
        for j in range(kk, k):
            groups[i, j] = centers[i]


@compiled
def _patch_indices(points, num_points, start, center_idx, patch_idx):
    count, n, _ = points.shape
    coords = np.empty((3, n), np.float32)  # one row per axis: the distance pass vectorises
    rows = np.empty((center_idx.shape[1], n), np.float32)
    min_dist = np.empty(n, np.float32)
    nearest = np.empty(patch_idx.shape[2], np.int64)
    sample = np.empty(_SAMPLE_RANKS, np.int64)
    for c in range(count):
        valid = num_points[c]
        for j in range(valid):
            coords[0, j], coords[1, j], coords[2, j] = points[c, j, 0], points[c, j, 1], points[c, j, 2]
        _farthest_points(coords[0], coords[1], coords[2], valid, start[c], center_idx[c], rows, min_dist)
        _nearest(rows.view(np.int32), valid, center_idx[c], patch_idx[c], nearest, sample)


def patch_indices_from(
    points: np.ndarray, num_points: np.ndarray, num_patches: int, patch_size: int, start: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(center_idx (C, P), patch_idx (C, P, K)) int64 of (C, N, 3) float32 crops with `num_points` (C,)
    valid points each, FPS starting at the valid indices `start` (C,)."""
    points = np.ascontiguousarray(points, dtype=np.float32)
    num_points = np.asarray(num_points, dtype=np.int64)
    start = np.asarray(start, dtype=np.int64)
    n = points.shape[1]
    if n == 0:
        raise ValueError("crops must have at least one point slot, got shape " + str(points.shape))
    if num_patches < 1 or patch_size < 1:
        raise ValueError(f"num_patches and patch_size must be >= 1, got {num_patches} and {patch_size}")
    for count, first in zip(num_points.tolist(), start.tolist()):  # a few crops: plain Python is cheapest
        if not 0 <= count <= n:
            raise ValueError(f"num_points must lie in [0, {n}], got {num_points.tolist()}")
        if not 0 <= first < max(count, 1):
            raise ValueError(f"start must index a valid point, got {start.tolist()} for {num_points.tolist()}")
    center_idx = np.empty((len(points), num_patches), np.int64)
    patch_idx = np.empty((len(points), num_patches, patch_size), np.int64)
    _patch_indices(points, num_points, start, center_idx, patch_idx)
    return center_idx, patch_idx


def patch_indices(
    crops: Crops, num_patches: int, patch_size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(center_idx (C, P), patch_idx (C, P, K)) int64 for the valid points of each crop of `crops`, FPS
    from a uniformly random valid point of each: floor(u n) of a 53-bit uniform u, as the model draws it
    (and 5x cheaper than `rng.integers` with an array of bounds)."""
    counts = crops.num_points.tolist()
    start = [int(u * max(count, 1)) for u, count in zip(rng.random(len(counts)).tolist(), counts)]
    return patch_indices_from(crops.points, crops.num_points, num_patches, patch_size, np.array(start))
