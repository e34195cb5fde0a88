"""Patchify: per-crop normalisation over valid points, exact FPS, exact kNN, gather."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.patchify import farthest_point_sample, knn_group, normalize_unit_sphere, patchify


def brute_force_fps(points: np.ndarray, n_valid: int, n_samples: int, start: int) -> list[int]:
    """Textbook FPS on the valid prefix, float32 like the tensor version, ties to the lowest index."""
    pts = points[:n_valid].astype(np.float32)
    chosen = [start]
    dist = np.full(n_valid, np.inf, dtype=np.float32)
    while len(chosen) < n_samples:
        diff = pts - pts[chosen[-1]]
        dist = np.minimum(dist, (diff * diff).sum(-1, dtype=np.float32))
        chosen.append(int(np.argmax(dist)))
    return chosen


def padded_cloud(torch_rng: torch.Generator, crops: int = 6, n: int = 300, min_valid: int = 100):
    pts = torch.randn(crops, n, 3, generator=torch_rng) * torch.tensor([2.0, 1.0, 0.5]) + 3.0
    num = torch.randint(min_valid, n + 1, (crops,), generator=torch_rng)
    # Padding far away: picking a padded point anywhere would be visible in every test below.
    pts[torch.arange(n) >= num[:, None]] = 1e3
    return pts, num


def test_normalisation_uses_valid_points_only(torch_rng):
    pts, num = padded_cloud(torch_rng)
    out = normalize_unit_sphere(pts, num)
    for c in range(pts.shape[0]):
        valid = out[c, : num[c]]
        assert torch.allclose(valid.mean(0), torch.zeros(3), atol=1e-5)
        assert valid.norm(dim=-1).max().item() == pytest.approx(1.0, abs=1e-6)
        assert torch.all(out[c, num[c] :] == 0)


def test_fps_matches_brute_force_reference(torch_rng):
    pts, num = padded_cloud(torch_rng)
    idx = farthest_point_sample(pts, num, 32, torch_rng)
    for c in range(pts.shape[0]):
        start = int(idx[c, 0])
        assert 0 <= start < num[c]
        assert idx[c].tolist() == brute_force_fps(pts[c].numpy(), int(num[c]), 32, start)


def test_fps_start_is_random(torch_rng):
    pts, num = padded_cloud(torch_rng, crops=1, min_valid=300)
    starts = {int(farthest_point_sample(pts, num, 4, torch_rng)[0, 0]) for _ in range(20)}
    assert len(starts) > 10


def test_knn_matches_brute_force(torch_rng):
    pts, num = padded_cloud(torch_rng)
    centers = farthest_point_sample(pts, num, 16, torch_rng)
    idx = knn_group(pts, num, centers, 32)
    for c in range(pts.shape[0]):
        valid = pts[c, : num[c]].double()
        for p in range(16):
            d = (valid - valid[centers[c, p]]).norm(dim=-1)
            expected = torch.sort(d).values[:32]
            got = (valid[idx[c, p]] - valid[centers[c, p]]).norm(dim=-1)
            assert idx[c, p, 0] == centers[c, p]  # the centre is its own nearest neighbour
            assert torch.all(idx[c, p] < num[c])
            assert torch.allclose(got, expected, atol=1e-9)


def test_tiny_clouds_never_use_padding(torch_rng):
    pts, num = padded_cloud(torch_rng, crops=4, n=64, min_valid=1)
    num[:] = torch.tensor([1, 5, 20, 40])
    patches = patchify(pts, num, num_patches=16, patch_size=32, generator=torch_rng)
    for c in range(4):
        assert torch.all(patches.center_idx[c] < num[c])
        assert torch.all(patches.patch_idx[c] < num[c])
    # With 5 valid points every one of them becomes a centre before any repeats.
    assert set(patches.center_idx[1, :5].tolist()) == set(range(5))
    assert torch.isfinite(patches.neighborhoods).all()


def test_patch_coordinates_are_relative_and_indices_reusable(torch_rng):
    pts, num = padded_cloud(torch_rng)
    first = patchify(pts, num, 16, 32, generator=torch_rng)
    normed = normalize_unit_sphere(pts, num)
    c, p = 2, 5
    expected = normed[c, first.patch_idx[c, p]] - normed[c, first.center_idx[c, p]]
    assert torch.allclose(first.neighborhoods[c, p], expected)
    assert torch.allclose(first.centers[c, p], normed[c, first.center_idx[c, p]])
    # Indices computed elsewhere (the data loader, on raw coordinates) give the same patches.
    raw_centers = farthest_point_sample(pts, num, 16, torch.Generator().manual_seed(7))
    raw_groups = knn_group(pts, num, raw_centers, 32)
    model_side = patchify(pts, num, 16, 32, generator=torch.Generator().manual_seed(7))
    loader_side = patchify(pts, num, 16, 32, center_idx=raw_centers, patch_idx=raw_groups)
    assert torch.equal(model_side.center_idx, loader_side.center_idx)
    assert torch.allclose(model_side.neighborhoods, loader_side.neighborhoods, atol=1e-6)


def test_patchify_rejects_half_precomputed_indices(torch_rng):
    pts, num = padded_cloud(torch_rng)
    with pytest.raises(ValueError, match="both"):
        patchify(pts, num, 16, 32, center_idx=torch.zeros(6, 16, dtype=torch.long))


@pytest.mark.cuda
def test_cuda_matches_cpu(torch_rng):
    pts, num = padded_cloud(torch_rng)
    idx = farthest_point_sample(pts.cuda(), num.cuda(), 32, torch.Generator("cuda").manual_seed(3)).cpu()
    for c in range(pts.shape[0]):
        assert idx[c].tolist() == brute_force_fps(pts[c].numpy(), int(num[c]), 32, int(idx[c, 0]))
    groups_cuda = knn_group(pts.cuda(), num.cuda(), idx.cuda(), 32).cpu()
    assert torch.equal(groups_cuda, knn_group(pts, num, idx, 32))
    on_cuda = patchify(pts.cuda(), num.cuda(), 32, 32, center_idx=idx.cuda(), patch_idx=groups_cuda.cuda())
    on_cpu = patchify(pts, num, 32, 32, center_idx=idx, patch_idx=groups_cuda)
    assert torch.allclose(on_cuda.neighborhoods.cpu(), on_cpu.neighborhoods, atol=1e-5)
