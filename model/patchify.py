"""Patchify padded point-cloud crops on tensors: normalise, FPS centres, kNN groups, gather.

Everything is batched over crops and runs on CPU or CUDA with plain PyTorch ops (no compiled
extension). Crops are zero-padded to a common length and carry their valid point count; padded
points never become centres or neighbours.

The data loader may compute `center_idx` / `patch_idx` itself on CPU (reference behaviour). Since the
per-crop normalisation is a similarity transform, indices computed on raw coordinates stay valid.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Patches:
    """Patch tensors of C crops with P patches of K points each."""

    centers: Tensor  # (C, P, 3) absolute centre coordinates of the normalised crop
    neighborhoods: Tensor  # (C, P, K, 3) patch points relative to their centre
    center_idx: Tensor  # (C, P) index of each centre in its crop (FPS order)
    patch_idx: Tensor  # (C, P, K) indices of each patch's points, nearest first


def valid_mask(num_points: Tensor, length: int) -> Tensor:
    """(C, N) bool: True where a point index is below the crop's valid count."""
    return torch.arange(length, device=num_points.device) < num_points[:, None]


def normalize_unit_sphere(points: Tensor, num_points: Tensor) -> Tensor:
    """Centre each crop on the mean of its valid points and scale it into the unit sphere.

    points: (C, N, 3), num_points: (C,). Padded entries are returned as zeros.
    """
    valid = valid_mask(num_points, points.shape[1])[..., None]
    count = num_points.clamp_min(1).to(points.dtype)[:, None]
    mean = (points * valid).sum(1) / count
    centered = (points - mean[:, None]) * valid
    radius = centered.norm(dim=-1).amax(dim=1).clamp_min(torch.finfo(points.dtype).tiny)
    return centered / radius[:, None, None]


def farthest_point_sample(
    points: Tensor, num_points: Tensor, num_samples: int, generator: torch.Generator | None = None
) -> Tensor:
    """Exact farthest point sampling with a uniformly random valid start point.

    Returns (C, num_samples) indices in selection order. Each step picks the valid point farthest
    (squared Euclidean) from the selected set; ties go to the lowest index. Crops with fewer valid
    points than `num_samples` repeat index 0 once every valid point is taken.
    """
    c, n, _ = points.shape
    valid = valid_mask(num_points, n)
    # Padded points start at -1 so they can never be the farthest (every valid distance is >= 0).
    min_dist = torch.where(valid, torch.inf, -1.0).to(points.dtype)
    rand = torch.rand(c, generator=generator, device=points.device)
    farthest = torch.minimum((rand * num_points).long(), (num_points - 1).clamp(min=0))
    rows = torch.arange(c, device=points.device)
    out = torch.empty(c, num_samples, dtype=torch.long, device=points.device)
    for i in range(num_samples):
        out[:, i] = farthest
        last = points[rows, farthest]
        dist = (points - last[:, None]).square().sum(-1)
        min_dist = torch.minimum(min_dist, dist)
        farthest = min_dist.argmax(dim=1)
    return out


def knn_group(points: Tensor, num_points: Tensor, center_idx: Tensor, k: int) -> Tensor:
    """Indices (C, P, k) of the k nearest valid points of every centre, nearest first, ties to the lowest index.

    The centre itself is included (distance 0). A crop with fewer than k valid points fills the
    missing neighbours with the centre index, which max-pooling in the tokenizer ignores.
    """
    c, n, _ = points.shape
    centers = points.gather(1, center_idx[..., None].expand(-1, -1, 3))
    # Squared distances as the loader computes them, (dx^2 + dy^2) + dz^2 of exact differences (not
    # the |a|^2 + |b|^2 - 2ab expansion), ranked by unique (distance bits, index) keys: non-negative
    # floats order like their bit patterns, so ties go to the lowest index (topk alone leaves their
    # order unspecified) and model-side groups equal the loader's bit for bit.
    dx, dy, dz = (points.transpose(1, 2)[:, :, None, :] - centers.transpose(1, 2)[..., None]).unbind(1)
    dist = dx * dx + dy * dy + dz * dz
    dist = dist.masked_fill(~valid_mask(num_points, n)[:, None, :], torch.inf)
    keys = (dist.view(torch.int32).long() << 32) | torch.arange(n, device=points.device)
    kk = min(k, n)
    idx = keys.topk(kk, dim=-1, largest=False, sorted=True).indices
    idx = torch.where(idx < num_points[:, None, None], idx, center_idx[..., None])
    if kk < k:
        idx = torch.cat([idx, center_idx[..., None].expand(-1, -1, k - kk)], dim=-1)
    return idx


def patchify(
    points: Tensor,
    num_points: Tensor,
    num_patches: int,
    patch_size: int,
    center_idx: Tensor | None = None,
    patch_idx: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Patches:
    """Normalise crops and cut them into patches.

    points (C, N, 3) padded crops; num_points (C,) valid counts. If `center_idx` and `patch_idx`
    are given (precomputed by the loader) only the normalisation and gather run here.
    """
    if (center_idx is None) != (patch_idx is None):
        raise ValueError("pass both center_idx and patch_idx, or neither")
    points = normalize_unit_sphere(points, num_points)
    if center_idx is None:
        center_idx = farthest_point_sample(points, num_points, num_patches, generator)
        patch_idx = knn_group(points, num_points, center_idx, patch_size)
    c, p, k = patch_idx.shape
    centers = points.gather(1, center_idx[..., None].expand(-1, -1, 3))
    grouped = points.gather(1, patch_idx.reshape(c, p * k, 1).expand(-1, -1, 3)).view(c, p, k, 3)
    return Patches(centers, grouped - centers[:, :, None], center_idx, patch_idx)
