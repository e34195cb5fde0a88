"""Loader-side patch indices equal the model's FPS and kNN for the same start point."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.patchify import farthest_point_sample as model_fps
from model.patchify import knn_group
from pipeline.config import MultiCropConfig
from pipeline.crops import Crops, multi_crop
from pipeline.patchify import patch_indices, patch_indices_from


def sample_crops(n: int, seed: int) -> tuple[Crops, Crops]:
    rng = np.random.default_rng(seed)
    cloud = (rng.standard_normal((n, 3)) * [2.0, 1.0, 0.5]).astype(np.float32)
    return multi_crop(cloud, MultiCropConfig(), rng)


@pytest.mark.parametrize(
    ("n", "seed"), [(16384, 0), (16384, 1), (600, 2), (40, 3), (20, 4)]
)  # full crops; local crops of 256 with few points; fewer points than patches; fewer than k
def test_matches_model_patchify(n, seed):
    for crops, patches in zip(sample_crops(n, seed), (64, 16)):
        pts, num = torch.from_numpy(crops.points), torch.from_numpy(crops.num_points)
        expected = model_fps(pts, num, patches, torch.Generator().manual_seed(seed))
        centers, groups = patch_indices_from(crops.points, crops.num_points, patches, 32, expected[:, 0].numpy())
        assert np.array_equal(centers, expected.numpy())
        assert np.array_equal(groups, knn_group(pts, num, expected, 32).numpy())


def test_patch_indices_shapes_and_validity():
    g, loc = sample_crops(1000, 0)
    loc.num_points[1] = 10  # a crop with fewer valid points than patches and than k
    for crops, patches in ((g, 64), (loc, 16)):
        centers, groups = patch_indices(crops, patches, 32, np.random.default_rng(0))
        assert centers.shape == (len(crops.num_points), patches) and centers.dtype == np.int64
        assert groups.shape == (len(crops.num_points), patches, 32) and groups.dtype == np.int64
        assert (centers < crops.num_points[:, None]).all()
        assert (groups < crops.num_points[:, None, None]).all()
        assert np.array_equal(groups[..., 0], centers)  # the centre is its own nearest neighbour
    assert set(centers[1, :10].tolist()) == set(range(10))  # every valid point is a centre before repeats


def test_start_point_is_random():
    g, _ = sample_crops(16384, 0)
    starts = {int(patch_indices(g, 4, 32, np.random.default_rng(s))[0][0, 0]) for s in range(20)}
    assert len(starts) > 15


def test_ties_go_to_the_lowest_index():
    points = np.zeros((1, 64, 3), np.float32)
    points[0, :, 0] = np.repeat(np.arange(16), 4)  # four copies of each point: ties everywhere
    centers, groups = patch_indices_from(points, np.array([64]), 8, 6, np.array([0]))
    chosen, min_dist = [0], np.full(64, np.inf)
    for _ in range(7):  # the definition, step by step: np.argmax takes the first of equal maxima
        min_dist = np.minimum(min_dist, (points[0, :, 0] - points[0, chosen[-1], 0]) ** 2)
        chosen.append(int(np.argmax(min_dist)))
    assert centers[0].tolist() == chosen == [0, 60, 28, 44, 12, 20, 36, 52]
    for c, row in zip(centers[0], groups[0]):
        key = np.abs(points[0, :, 0] - points[0, c, 0]) * 1000 + np.arange(64)  # (distance, index) order
        assert row.tolist() == np.argsort(key)[:6].tolist()


@pytest.mark.parametrize("n", [4096, 1024, 700, 129, 100])  # rows of >= 4 k take the sampled threshold
def test_knn_equals_a_full_sort(n):
    rng = np.random.default_rng(n)
    points = rng.standard_normal((4, n, 3)).astype(np.float32)
    points[1, n // 2 :] = points[1, : n - n // 2]  # duplicated points: exact ties in every row
    points[2] = np.round(points[2], 1)  # a coarse grid: many equal distances
    points[3, ::16] *= 1e-3  # the threshold sample is the nearest keys of central centres: no threshold
    num = np.array([n, n, n - 7, n])
    centers, groups = patch_indices_from(points, num, 32, 32, np.array([5, 0, n - 8, 0]))
    for crop, valid, center_row, group_rows in zip(points, num, centers, groups):
        for c, row in zip(center_row, group_rows):
            d = ((crop[:valid] - crop[c]) ** 2).sum(axis=1, dtype=np.float32)
            assert row.tolist() == np.lexsort((np.arange(valid), d))[:32].tolist()
    model_side = knn_group(torch.from_numpy(points), torch.from_numpy(num), torch.from_numpy(centers), 32)
    assert np.array_equal(groups, model_side.numpy())  # the model breaks ties the same way


def test_bad_counts_are_refused():
    points = np.zeros((2, 10, 3), np.float32)
    with pytest.raises(ValueError, match="num_points"):
        patch_indices_from(points, np.array([10, 11]), 4, 4, np.array([0, 0]))
    with pytest.raises(ValueError, match="start"):
        patch_indices_from(points, np.array([10, 3]), 4, 4, np.array([0, 3]))
    with pytest.raises(ValueError, match="point slot"):
        patch_indices_from(np.zeros((2, 0, 3), np.float32), np.array([0, 0]), 4, 4, np.array([0, 0]))
    with pytest.raises(ValueError, match="patch_size must be >= 1"):
        patch_indices_from(points, np.array([10, 3]), 4, 0, np.array([0, 0]))
