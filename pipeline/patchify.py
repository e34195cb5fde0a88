"""Loader-side patch indices: exact FPS centres and kNN groups of padded crops, in numpy.

Same semantics as `model.patchify.farthest_point_sample` / `knn_group` (reference 1.4): FPS starts at a
uniformly random valid point, each step takes the valid point farthest (squared Euclidean, float32) from
the chosen set, ties to the lowest index, and repeats index 0 once a crop runs out of valid points; each
centre's group is its `patch_size` nearest valid points, nearest first, the centre itself included, and
missing neighbours (crops with fewer valid points) are filled with the centre. Distances are computed from
exact coordinate differences in the same order as the model, so for the same start the indices agree.

Only indices are produced; the model gathers and normalises coordinates (`CropBatch.center_idx`,
`patch_idx`). Everything is vectorised over the crops of one kind of one sample; the FPS loop runs once
per centre over a (crops, 3, points) array.
"""

from __future__ import annotations

import numpy as np

from pipeline.crops import Crops


def farthest_point_sample(
    points: np.ndarray, num_points: np.ndarray, num_samples: int, start: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """FPS of (C, N, 3) float32 crops from the valid indices `start` (C,).

    Returns (C, S) int64 indices in selection order and a (C, S, N) float32 view of the squared
    distances from each chosen centre to every point: step i computes exactly that row to update the
    farthest-point distances, so keeping it gives the kNN distances for free.
    """
    count, n, _ = points.shape
    coords = np.ascontiguousarray(points.transpose(0, 2, 1))  # (C, 3, N): each step works on rows
    # Padded points start at -1 so they can never be the farthest (every valid distance is >= 0).
    min_dist = np.where(np.arange(n) < num_points[:, None], np.float32(np.inf), np.float32(-1.0))
    diff = np.empty_like(coords)
    diff_x, diff_y, diff_z = diff[:, 0], diff[:, 1], diff[:, 2]  # views made once, not per step
    sq_dist = np.empty((num_samples, count, n), np.float32)  # step-major: contiguous writes per step
    flat = np.ascontiguousarray(points).reshape(count * n, 3)
    crop_start = np.arange(0, count * n, n)
    chosen = [np.asarray(start, dtype=np.int64)]
    for i in range(num_samples):
        centre = flat.take(crop_start + chosen[-1], axis=0)  # (C, 3)
        np.subtract(coords, centre[:, :, None], out=diff)
        np.square(diff, out=diff)
        dist = np.add(diff_x, diff_y, out=sq_dist[i])
        np.add(dist, diff_z, out=dist)
        if i + 1 < num_samples:
            np.minimum(min_dist, dist, out=min_dist)
            chosen.append(min_dist.argmax(axis=1))
    return np.stack(chosen, axis=1), sq_dist.transpose(1, 0, 2)


def knn_from_distances(
    sq_dist: np.ndarray, num_points: np.ndarray, center_idx: np.ndarray, k: int
) -> np.ndarray:
    """(C, P, k) int64 indices of the k nearest valid points of each centre, nearest first.

    sq_dist: (C, P, N) squared distances of each centre to every point (overwritten: padding -> inf;
    the masking and the fill of missing neighbours are skipped when no crop is padded).
    The model ranks their square roots, the same order. Selection runs on the int32 view of the
    non-negative floats (same order, faster): the k-th smallest per row by `partition`, the k entries at
    or below it, and a sort of those k only; `argpartition` (slower) only when a row ties at the k-th.
    """
    count, p, n = sq_dist.shape
    padding = bool((num_points < n).any())  # usually not: crops of a full cloud hold all their points
    if padding:
        np.copyto(sq_dist, np.float32(np.inf), where=(np.arange(n) >= num_points[:, None])[:, None, :])
    keys = sq_dist.view(np.int32)
    kk = min(k, n)
    if kk == n:
        idx = np.broadcast_to(np.arange(n), keys.shape)
    else:
        threshold = np.partition(keys, kk - 1, axis=-1)[..., kk - 1 : kk]
        flat = np.flatnonzero(keys <= threshold)
        if flat.size == count * p * kk:  # every row holds at least kk, so exactly kk each, in row order
            row_start = np.arange(0, count * p * n, n)[:, None]
            idx = (flat.reshape(count * p, kk) - row_start).reshape(count, p, kk)
        else:
            idx = np.argpartition(keys, kk - 1, axis=-1)[..., :kk]
    near = np.take_along_axis(keys, idx, axis=-1)
    order = np.argsort(near, axis=-1)
    idx = np.take_along_axis(idx, order, axis=-1)
    if padding:
        padded = np.take_along_axis(near, order, axis=-1) == np.float32(np.inf).view(np.int32)
        idx = np.where(padded, center_idx[:, :, None], idx)
    if kk < k:
        idx = np.concatenate([idx, np.broadcast_to(center_idx[:, :, None], (count, p, k - kk))], axis=-1)
    return idx


def patch_indices(
    crops: Crops, num_patches: int, patch_size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(center_idx (C, P), patch_idx (C, P, K)) int64 for the valid points of each crop of `crops`."""
    start = rng.integers(0, np.maximum(crops.num_points, 1))
    center_idx, sq_dist = farthest_point_sample(crops.points, crops.num_points, num_patches, start)
    return center_idx, knn_from_distances(sq_dist, crops.num_points, center_idx, patch_size)
