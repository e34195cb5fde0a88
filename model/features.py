"""From raw point clouds to encoder tokens: subsample, prepare (the ViT's patches), encode.

These are the steps every feature consumer shares: the evaluation protocols (`launch.evaluation.features`)
and `model.pretrained`'s `embed` call the same functions, so their features are the same numbers.
Subsampling and patch centres are random (a random FPS start); a seeded generator makes them repeatable.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from configuration import StrictModel
from model.backbone import Backbone
from model.config import ModelConfig
from model.patchify import farthest_point_sample


class InputSpec(StrictModel):
    """How a cloud becomes encoder input: points kept, how they are chosen, patches and their size."""

    num_points: int = Field(1024, ge=1)
    subsample: Literal["fps", "random"] = "fps"
    num_patches: int = Field(64, ge=1)
    patch_size: int = Field(32, ge=1)


def model_input(cfg: ModelConfig, num_points: int = 1024) -> InputSpec:
    """FPS to `num_points`, in the model's patch geometry: patches scale with the points from the
    pretraining count of `global_patches` per 1,024 points, each of the model's patch size."""
    patches = max(1, cfg.patchify.global_patches * num_points // 1024)
    return InputSpec(num_points=num_points, num_patches=patches, patch_size=cfg.patchify.patch_size)


def subsample_indices(points: Tensor, num_points: Tensor, spec: InputSpec, generator: torch.Generator
                      ) -> tuple[Tensor, Tensor] | None:
    """Indices (B, n) of the points `subsample` keeps (padding entries point at 0) and the kept counts, or
    None when every cloud already has no more points than asked (they are kept whole)."""
    n = spec.num_points
    if points.shape[1] <= n:
        return None
    if spec.subsample == "fps":
        idx = farthest_point_sample(points, num_points, n, generator)
    else:
        keys = torch.rand(points.shape[:2], generator=generator, device=points.device)
        keys = keys.masked_fill(torch.arange(points.shape[1], device=points.device) >= num_points[:, None], 2.0)
        idx = keys.argsort(dim=1)[:, :n]
    kept = num_points.clamp(max=n)
    return torch.where(torch.arange(n, device=points.device) < kept[:, None], idx, 0), kept


def subsample(points: Tensor, num_points: Tensor, spec: InputSpec, generator: torch.Generator
              ) -> tuple[Tensor, Tensor]:
    """(B, n, 3) clouds of at most `spec.num_points` points each, and their valid counts.

    Clouds that already have no more points than asked are kept whole (ScanObjectNN at 2,048).
    """
    chosen = subsample_indices(points, num_points, spec, generator)
    if chosen is None:
        return points, num_points
    idx, kept = chosen
    out = points.gather(1, idx[..., None].expand(-1, -1, 3))
    return out * (torch.arange(idx.shape[1], device=points.device) < kept[:, None])[..., None], kept


def encode(encoder: Backbone, points: Tensor, num_points: Tensor, spec: InputSpec, generator: torch.Generator):
    """Tokens (B, [1 +] T, D) of subsampled clouds and the backbone's input they came from (its `centers`
    and `center_idx` place the tokens); gradients flow if enabled.

    `prepare` centres and scales each cloud into the unit sphere, as the pretraining crops are.
    """
    inputs = encoder.prepare(points, num_points, spec.num_patches, spec.patch_size, generator=generator)
    return encoder(inputs), inputs
