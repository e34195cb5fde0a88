"""Multi-crop: shapes, crops are subsets of the cloud, the box property, sizes, augmentation, determinism."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from pipeline import crops
from pipeline.config import AugmentConfig, CropConfig, MultiCropConfig
from pipeline.crops import (
    augment_matrices,
    box_distance,
    crop_indices,
    draw_boxes,
    multi_crop,
    nearest,
    random_rotations,
    uniform_subsets,
)

NO_AUGMENT = AugmentConfig(rotate_z=False, scale=(1.0, 1.0))
MASK_MODE = MultiCropConfig(global_crops=CropConfig(count=1, points=1024, scale=(0.4, 1.0)), local_crops=None)


def surface_cloud(n: int, seed: int = 0) -> np.ndarray:
    """Distinct float32 points on a noisy anisotropic ellipsoid surface."""
    rng = np.random.default_rng(seed)
    p = rng.standard_normal((n, 3))
    p /= np.linalg.norm(p, axis=1, keepdims=True)
    return (p * [2.0, 1.0, 0.5] + rng.normal(0, 0.01, (n, 3))).astype(np.float32)


def homogeneous(cloud: np.ndarray) -> np.ndarray:
    return np.vstack([cloud.T, np.ones(len(cloud))]).astype(np.float32)


def test_shapes_and_dtypes():
    g, loc = multi_crop(surface_cloud(16384), MultiCropConfig(), np.random.default_rng(0))
    assert g.points.shape == (2, 1024, 3) and g.points.dtype == np.float32
    assert loc.points.shape == (4, 256, 3) and loc.points.dtype == np.float32
    assert g.num_points.dtype == np.int64 and g.num_points.tolist() == [1024, 1024]
    assert loc.num_points.tolist() == [256] * 4
    assert np.isfinite(g.points).all() and np.isfinite(loc.points).all()


def test_mask_mode_has_one_global_crop():
    g, loc = multi_crop(surface_cloud(5000), MASK_MODE, np.random.default_rng(0))
    assert loc is None
    assert g.points.shape == (1, 1024, 3) and g.num_points.tolist() == [1024]


def test_crop_points_are_distinct_points_of_the_cloud():
    cloud = surface_cloud(3000)
    rows = {tuple(p) for p in cloud.tolist()}
    g, loc = multi_crop(cloud, MultiCropConfig(augment=NO_AUGMENT), np.random.default_rng(1))
    for batch in (g, loc):
        for points, num in zip(batch.points, batch.num_points):
            valid = [tuple(p) for p in points[:num].tolist()]
            assert set(valid) <= rows
            assert len(set(valid)) == num  # subsampled without replacement


def test_box_property_and_sizes():
    """Kept points are among the n nearest in their box metric; with n == crop size, exactly those."""
    cloud = surface_cloud(2000)  # local boxes with s * N < 256 keep exactly n = 256 points
    kinds = (MultiCropConfig().global_crops, MultiCropConfig().local_crops)
    points_h = homogeneous(cloud)
    exact = 0
    for seed in range(20):
        boxes, indices = crop_indices(cloud, kinds, np.random.default_rng(seed))
        limits = [1024] * 2 + [256] * 4
        for lhs, n, limit, idx in zip(boxes.lhs, boxes.sizes, limits, indices):
            d = box_distance(points_h, lhs)
            assert len(idx) == min(n, limit) and len(np.unique(idx)) == len(idx)
            nth = np.partition(d, n - 1)[n - 1]
            assert d[idx].max() <= nth
            if n == limit:
                exact += 1
                dropped = np.setdiff1d(np.arange(len(cloud)), idx)
                assert d[idx].max() <= d[dropped].min()
    assert exact > 5


def test_box_frames_and_distances():
    cloud = surface_cloud(500)
    spec = CropConfig(count=50, points=64, scale=(0.05, 0.4))
    boxes = draw_boxes(cloud, (spec,), np.random.default_rng(3))
    norms = np.linalg.norm(boxes.frames.astype(np.float64), axis=2)  # (C, 3) = the axis weights w
    rotations = boxes.frames / norms[:, :, None]
    assert np.allclose(rotations @ rotations.transpose(0, 2, 1), np.eye(3), atol=1e-5)
    assert np.allclose(np.linalg.det(rotations), 1.0, atol=1e-5)
    w = np.sort(norms, axis=1)
    assert np.allclose(w.prod(axis=1), 1.0, atol=1e-5)  # a permutation of (1, 1/sqrt(a), sqrt(a))
    assert np.isclose(w, 1.0, atol=1e-5).any(axis=1).all()
    assert (w[:, 2] ** 2 <= 3.0 / 0.33 * (1 + 1e-5)).all()  # w_max / w_min = max(a, 1/a)
    points_h = homogeneous(cloud)
    for lhs, frame, c in zip(boxes.lhs, boxes.frames, boxes.center_idx):
        expected = np.abs((cloud.astype(np.float64) - cloud[c]) @ frame.T.astype(np.float64)).max(axis=1)
        assert np.allclose(box_distance(points_h, lhs), expected, atol=1e-5)


def test_global_box_sizes_are_uniform_fractions():
    n = 16384
    boxes = draw_boxes(surface_cloud(n), (CropConfig(count=4000, points=1024, scale=(0.4, 1.0)),), np.random.default_rng(0))
    fraction = np.array(boxes.sizes) / n
    assert fraction.min() >= 0.4 - 1 / n and fraction.max() < 1.0
    assert abs(fraction.mean() - 0.7) < 0.01
    assert np.allclose(np.quantile(fraction, [0.25, 0.5, 0.75]), [0.55, 0.7, 0.85], atol=0.015)
    assert min(boxes.center_idx) >= 0 and max(boxes.center_idx) < n
    assert len(set(boxes.center_idx)) > 3500


def test_box_size_respects_minimum_and_cloud_size():
    boxes = draw_boxes(surface_cloud(3000), (CropConfig(count=500, points=256, scale=(0.05, 0.4)),), np.random.default_rng(0))
    assert min(boxes.sizes) == 256  # floor(s N) < 256 whenever s < 0.085
    assert max(boxes.sizes) <= 1200
    tiny = draw_boxes(surface_cloud(100), (CropConfig(count=50, points=256, scale=(0.05, 0.4)),), np.random.default_rng(0))
    assert tiny.sizes == [100] * 50


def test_nearest_is_the_n_smallest_with_random_ties():
    rng = np.random.default_rng(0)
    d = rng.random(1000).astype(np.float32)
    kept = nearest(d, 300, rng)
    assert np.array_equal(np.sort(kept), np.sort(np.argsort(d)[:300]))
    ties = np.repeat(np.arange(10, dtype=np.float32), 100)  # 100 points at each distance 0..9
    draws = [nearest(ties, 250, np.random.default_rng(s)) for s in range(5)]
    for kept in draws:
        assert len(kept) == 250 and len(np.unique(kept)) == 250
        assert np.array_equal(np.sort(kept)[:200], np.arange(200))  # all of distances 0 and 1
        assert (ties[kept] <= 2).all()
    assert len({tuple(np.sort(k)) for k in draws}) == 5  # the 50 of the 100 tied at 2 vary


def test_subsample_is_uniform():
    """Box of the whole cloud (scale 1): every point is in 10 of 40 with probability 1/4."""
    cloud = surface_cloud(40)
    spec = CropConfig(count=1, points=10, scale=(1.0, 1.0))
    counts = np.zeros(40)
    rng = np.random.default_rng(0)
    trials = 4000
    for _ in range(trials):
        counts[crop_indices(cloud, (spec,), rng)[1][0]] += 1
    assert np.allclose(counts / trials, 0.25, atol=0.035)


def pair_frequencies(rng: np.random.Generator, batches: int, per_batch: int) -> tuple[np.ndarray, float]:
    """Frequencies of the 15 2-subsets of range(6), and how often neighbours in one batch are equal."""
    pairs = {p: i for i, p in enumerate(itertools.combinations(range(6), 2))}
    counts, same = np.zeros(15), 0
    for _ in range(batches):
        subsets = [tuple(sorted(s.tolist())) for s in uniform_subsets([6] * per_batch, [2] * per_batch, rng)]
        for s in subsets:
            counts[pairs[s]] += 1
        same += sum(a == b for a, b in zip(subsets[::2], subsets[1::2]))
    return counts / (batches * per_batch), same / (batches * per_batch // 2)


def test_uniform_subsets_are_uniform_and_independent():
    freq, same = pair_frequencies(np.random.default_rng(0), 300, 50)  # 15,000 subsets, 1,000 per pair
    assert np.allclose(freq, 1 / 15, atol=0.01)  # 5 standard deviations of a count of 1,000
    assert abs(same - 1 / 15) < 0.015  # subsets of one batch are independent


def test_uniform_subsets_stay_uniform_when_runs_fall_short(monkeypatch):
    """Runs of 2 draws for 2 of 6 values repeat a value 1 time in 6; those subsets come from `choice`."""
    monkeypatch.setattr(crops, "_draw_count", lambda n, m: m)
    freq, same = pair_frequencies(np.random.default_rng(1), 300, 50)
    assert np.allclose(freq, 1 / 15, atol=0.01)
    assert abs(same - 1 / 15) < 0.015


def test_uniform_subsets_sizes_and_ranges():
    populations, sizes = [100, 3000, 7, 5, 16383], [10, 1024, 5, 2, 256]  # 5 of 7: `choice` (m > n / 2)
    seen = np.zeros(max(populations), np.bool_)
    for seed in range(5):
        subsets = uniform_subsets(populations, sizes, np.random.default_rng(seed), seen)
        for subset, n, m in zip(subsets, populations, sizes):
            assert len(subset) == m and len(np.unique(subset)) == m
            assert subset.min() >= 0 and subset.max() < n
        assert not seen.any()  # the scratch is restored for the next sample


def test_tiny_cloud_is_kept_whole_and_padded():
    cloud = surface_cloud(100)
    g, loc = multi_crop(cloud, MultiCropConfig(augment=NO_AUGMENT), np.random.default_rng(0))
    for batch in (g, loc):
        assert batch.num_points.tolist() == [100] * len(batch.num_points)
        assert (batch.points[:, 100:] == 0).all()
        for points in batch.points:
            assert sorted(map(tuple, points[:100].tolist())) == sorted(map(tuple, cloud.tolist()))


def test_degenerate_clouds_give_finite_crops():
    same = np.ones((500, 3), np.float32)  # every distance ties
    flat = surface_cloud(2000) * np.array([1, 1, 0], np.float32)
    for cloud in (same, flat):
        g, loc = multi_crop(cloud, MultiCropConfig(), np.random.default_rng(0))
        assert np.isfinite(g.points).all() and np.isfinite(loc.points).all()
        assert g.num_points.tolist() == [500 if cloud is same else 1024] * 2


def test_deterministic_per_generator_state():
    cloud = surface_cloud(16384)
    a = multi_crop(cloud, MultiCropConfig(), np.random.default_rng(42))
    b = multi_crop(cloud, MultiCropConfig(), np.random.default_rng(42))
    c = multi_crop(cloud, MultiCropConfig(), np.random.default_rng(43))
    for x, y, z in zip(a, b, c):
        assert np.array_equal(x.points, y.points) and np.array_equal(x.num_points, y.num_points)
        assert not np.array_equal(x.points, z.points)


def test_crops_of_one_sample_differ():
    g, loc = multi_crop(surface_cloud(16384), MultiCropConfig(), np.random.default_rng(0))
    assert not np.array_equal(g.points[0], g.points[1])
    assert len({loc.points[i].tobytes() for i in range(4)}) == 4


def crops_with(augment: AugmentConfig, cloud: np.ndarray, seed: int):
    """Augmentation draws come after all crop draws, so the same seed gives the same point sets."""
    return multi_crop(cloud, MultiCropConfig(augment=augment), np.random.default_rng(seed))


def test_anisotropic_scale_per_crop_and_axis():
    cube = np.random.default_rng(0).uniform(-0.5, 0.5, (16384, 3)).astype(np.float32)
    for seed in range(3):
        plain = crops_with(NO_AUGMENT, cube, seed)
        scaled = crops_with(AugmentConfig(rotate_z=False, scale=(0.8, 1.2)), cube, seed)
        for p, s in zip(plain, scaled):
            ratio = s.points / p.points  # (count, M, 3); the cube has no zero coordinates
            factor = ratio[:, :1]
            assert np.allclose(ratio, factor, rtol=1e-6)  # one factor per crop and axis
            assert (factor >= 0.8 - 1e-6).all() and (factor <= 1.2 + 1e-6).all()
            extent = s.points.max(axis=1) - s.points.min(axis=1)
            assert (extent <= 1.2 + 1e-5).all()
    matrices = augment_matrices(1000, AugmentConfig(rotate_z=False), np.random.default_rng(0))
    diagonal = np.diagonal(matrices, axis1=1, axis2=2)
    assert np.allclose(matrices, diagonal[:, :, None] * np.eye(3))
    assert 0.8 <= diagonal.min() < 0.81 and 1.19 < diagonal.max() <= 1.2


def test_rotation_about_z_keeps_z_and_radius():
    cloud = surface_cloud(16384)
    plain = crops_with(NO_AUGMENT, cloud, 5)
    rotated = crops_with(AugmentConfig(rotate_z=True, scale=(1.0, 1.0)), cloud, 5)
    for p, r in zip(plain, rotated):
        assert np.array_equal(r.points[..., 2], p.points[..., 2])
        assert np.allclose(
            np.hypot(r.points[..., 0], r.points[..., 1]),
            np.hypot(p.points[..., 0], p.points[..., 1]),
            atol=1e-5,
        )
        assert not np.allclose(r.points[..., :2], p.points[..., :2])
    angles = augment_matrices(2000, AugmentConfig(scale=(1.0, 1.0)), np.random.default_rng(0))
    theta = np.arctan2(angles[:, 0, 1], angles[:, 0, 0]) % (2 * np.pi)
    assert np.histogram(theta, 4, (0, 2 * np.pi))[0].min() > 420  # about uniform on (0, 2 pi)


def test_rotations_are_uniform_on_so3():
    r = random_rotations(20000, np.random.default_rng(0))
    assert np.allclose(r @ r.transpose(0, 2, 1), np.eye(3), atol=1e-9)
    assert np.allclose(np.linalg.det(r), 1.0)
    assert np.abs(r.mean(axis=0)).max() < 0.02  # the Haar mean is 0
    assert np.allclose((r**2).mean(axis=0), 1 / 3, atol=0.01)  # each entry has variance 1/3


@pytest.mark.parametrize("n", [1, 7])
def test_clouds_smaller_than_a_patch(n):
    g, loc = multi_crop(surface_cloud(n), MultiCropConfig(), np.random.default_rng(0))
    assert g.num_points.tolist() == [n, n] and loc.num_points.tolist() == [n] * 4
    assert np.isfinite(g.points).all()
