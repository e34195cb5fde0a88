"""Synthetic point clouds for the benchmarks that need no shards: surfaces of random ellipsoids.

Every crop is the surface of an ellipsoid with axes uniform in [0.3, 1.0] under a random rotation,
with small Gaussian jitter, and every crop is full (num_points = N, no padding). The same seed gives
the same clouds, so runs and machines compare on identical input.
"""

from __future__ import annotations

import torch
from torch import Tensor

from model.batch import CropBatch, MultiCropBatch
from model.config import ModelConfig


def random_rotations(n: int, generator: torch.Generator) -> Tensor:
    """(n, 3, 3) random rotations (QR of Gaussian matrices, signs fixed to det = +1)."""
    q, r = torch.linalg.qr(torch.randn(n, 3, 3, generator=generator))
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))[:, None, :]
    return q * torch.sign(torch.linalg.det(q))[:, None, None]


def ellipsoid_crops(batch: int, crops: int, points: int, generator: torch.Generator) -> CropBatch:
    """`crops` full crops per sample, each `points` points on a random ellipsoid's surface."""
    n = batch * crops
    directions = torch.nn.functional.normalize(torch.randn(n, points, 3, generator=generator), dim=-1)
    axes = 0.3 + 0.7 * torch.rand(n, 1, 3, generator=generator)
    surface = (directions * axes) @ random_rotations(n, generator).transpose(1, 2)
    surface = surface + 0.01 * torch.randn(surface.shape, generator=generator)
    num_points = torch.full((batch, crops), points, dtype=torch.long)
    return CropBatch(surface.view(batch, crops, points, 3), num_points)


def synthetic_batch(cfg: ModelConfig, batch: int, global_points: int, local_points: int) -> MultiCropBatch:
    """A batch with the model's crop counts (local crops only where the config has them), seed 0."""
    generator = torch.Generator().manual_seed(0)
    global_crops = ellipsoid_crops(batch, cfg.num_global_crops, global_points, generator)
    local_crops = None
    if cfg.num_local_crops:
        local_crops = ellipsoid_crops(batch, cfg.num_local_crops, local_points, generator)
    return MultiCropBatch(global_crops, local_crops)
