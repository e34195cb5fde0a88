"""Loader-side patch indices equal the model's FPS and kNN for the same start point."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.patchify import farthest_point_sample as model_fps
from model.patchify import knn_group
from pipeline.crops import Crops, MultiCropSpec, multi_crop
from pipeline.patchify import farthest_point_sample, knn_from_distances, patch_indices


def sample_crops(n: int, seed: int) -> tuple[Crops, Crops]:
    rng = np.random.default_rng(seed)
    cloud = (rng.standard_normal((n, 3)) * [2.0, 1.0, 0.5]).astype(np.float32)
    return multi_crop(cloud, MultiCropSpec(), rng)


@pytest.mark.parametrize(
    ("n", "seed"), [(16384, 0), (16384, 1), (600, 2), (40, 3), (20, 4)]
)  # full crops; local crops of 256 with few points; fewer points than patches; fewer than k
def test_matches_model_patchify(n, seed):
    for crops, patches in zip(sample_crops(n, seed), (64, 16)):
        pts, num = torch.from_numpy(crops.points), torch.from_numpy(crops.num_points)
        expected = model_fps(pts, num, patches, torch.Generator().manual_seed(seed))
        centers, sq_dist = farthest_point_sample(
            crops.points, crops.num_points, patches, expected[:, 0].numpy()
        )
        assert np.array_equal(centers, expected.numpy())
        groups = knn_from_distances(sq_dist, crops.num_points, centers, 32)
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


def test_ties_in_distance_fall_back_to_argpartition():
    points = np.zeros((1, 64, 3), np.float32)
    points[0, :, 0] = np.repeat(np.arange(16), 4)  # four copies of each point: ties everywhere
    num = np.array([64])
    centers, sq_dist = farthest_point_sample(points, num, 8, np.array([0]))
    groups = knn_from_distances(sq_dist, num, centers, 6)
    for c, row in zip(centers[0], groups[0]):
        d = np.abs(points[0, row, 0] - points[0, c, 0])
        assert row[0] == c or d[0] == 0
        assert np.all(np.diff(d) >= 0) and len(set(row.tolist())) == 6
        assert np.array_equal(np.sort(d), np.sort(np.abs(points[0, :, 0] - points[0, c, 0]))[:6])
