"""From point clouds to encoder features: subsample, augment, patchify, encode, pool.

The same path serves the frozen-feature protocols (SVM, kNN) and the trained heads (probes,
fine-tuning): `encode_pooled` is differentiable, `extract_features` is its batched no-grad use. The
model-level steps are `model.features`'s, which `model.pretrained`'s `embed` uses too. Subsampling and
patch centres are random (random FPS start), as in the reference's evaluation
(`deterministic_val_data: false`); a seeded generator makes a run repeatable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from pydantic import Field, field_validator
from torch import Tensor
from tqdm import tqdm

from configuration import StrictModel
from launch.evaluation.data import LabelledSet
from model.backbone import Backbone, Pooling, pool
from model.features import InputSpec, encode, subsample


class InputOverrides(StrictModel):
    """Input settings that replace a protocol's defaults for a dataset (unset: the default)."""

    num_points: int | None = Field(None, ge=1)
    num_patches: int | None = Field(None, ge=1)
    patch_size: int | None = Field(None, ge=1)

    def apply(self, spec: InputSpec) -> InputSpec:
        return spec.model_copy(update=self.model_dump(exclude_none=True))


class Augmentation(StrictModel):
    """Training-time augmentation: a turn about Z and an anisotropic scale."""

    rotate_z: bool = False
    scale: tuple[float, float] | None = None

    @field_validator("scale")
    @classmethod
    def _ordered(cls, v: tuple[float, float] | None) -> tuple[float, float] | None:
        if v is not None and not 0 < v[0] <= v[1]:
            raise ValueError(f"scale must be (low, high) with 0 < low <= high, got {v}")
        return v

    @property
    def active(self) -> bool:
        return self.rotate_z or self.scale is not None


def augment(points: Tensor, aug: Augmentation, generator: torch.Generator) -> Tensor:
    """Apply `aug` to (B, N, 3) clouds, one random draw per cloud (padding stays at the origin)."""
    b = points.shape[0]
    if aug.rotate_z:
        angle = torch.rand(b, generator=generator, device=points.device) * (2 * math.pi)
        cos, sin = angle.cos(), angle.sin()
        x, y = points[..., 0], points[..., 1]
        points = torch.stack([cos[:, None] * x - sin[:, None] * y, sin[:, None] * x + cos[:, None] * y,
                              points[..., 2]], dim=-1)
    if aug.scale is not None:
        low, high = aug.scale
        factors = low + (high - low) * torch.rand(b, 1, 3, generator=generator, device=points.device)
        points = points * factors
    return points


def encode_pooled(encoder: Backbone, points: Tensor, num_points: Tensor, spec: InputSpec,
                  pooling: Sequence[Pooling], generator: torch.Generator,
                  aug: Augmentation | None = None) -> Tensor:
    """Pooled features (B, F) of a batch of raw clouds; gradients flow if enabled."""
    points, num_points = subsample(points, num_points, spec, generator)
    if aug is not None and aug.active:
        points = augment(points, aug, generator)
    tokens, _ = encode(encoder, points, num_points, spec, generator)
    return pool(tokens, encoder.has_cls, pooling).float()


def batches(data: LabelledSet, batch_size: int, device: torch.device, order: np.ndarray | None = None):
    """(points, num_points, labels) tensors on `device`, `batch_size` clouds at a time."""
    order = np.arange(len(data)) if order is None else order
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        yield (torch.from_numpy(data.points[idx]).to(device), torch.from_numpy(data.num_points[idx]).to(device),
               torch.from_numpy(data.labels[idx]).to(device))


def feature_dim(encoder: Backbone, pooling: Sequence[Pooling]) -> int:
    return encoder.dim * len(pooling)


@torch.no_grad()
def extract_features(encoder: Backbone, data: LabelledSet, spec: InputSpec, pooling: Sequence[Pooling],
                     device: torch.device | str, seed: int, batch_size: int = 32, normalize: bool = True) -> np.ndarray:
    """Frozen features (S, F) as float32, L2-normalised per sample when `normalize` (the SVM protocol).

    A progress bar shows on a terminal when there is more than one batch (the training monitor's
    one-batch calls stay quiet).
    """
    device = torch.device(device)
    generator = torch.Generator(device=device).manual_seed(seed)
    was_training = encoder.training
    encoder.eval()
    out = []
    try:
        for points, counts, _ in tqdm(batches(data, batch_size, device), desc=f"features {data.name}", unit="batch",
                                      total=math.ceil(len(data) / batch_size), leave=False,
                                      disable=None if len(data) > batch_size else True):
            feats = encode_pooled(encoder, points, counts, spec, pooling, generator)
            out.append(torch.nn.functional.normalize(feats, dim=-1) if normalize else feats)
    finally:
        encoder.train(was_training)
    return torch.cat(out).cpu().numpy() if out else np.zeros((0, feature_dim(encoder, pooling)), np.float32)
