from __future__ import annotations

import pytest
import torch

from model.batch import CropBatch, MultiCropBatch
from model.config import ModelConfig, load_model_config
from tests.conftest import ROOT


@pytest.fixture
def tiny_model_config() -> ModelConfig:
    return load_model_config(ROOT / "configs/model/tiny.yaml")


def random_crops(batch: int, crops: int, points: int, torch_rng: torch.Generator, min_points: int | None = None) -> CropBatch:
    """Points on anisotropic blobs, zero-padded past a random valid count in [min_points, points]."""
    pts = torch.randn(batch, crops, points, 3, generator=torch_rng) * torch.tensor([1.0, 0.5, 0.25])
    if min_points is None:
        num = torch.full((batch, crops), points)
    else:
        num = torch.randint(min_points, points + 1, (batch, crops), generator=torch_rng)
    pts = pts * (torch.arange(points) < num[..., None])[..., None]
    return CropBatch(pts, num)


def tiny_batch(batch: int, torch_rng: torch.Generator) -> MultiCropBatch:
    return MultiCropBatch(random_crops(batch, 2, 512, torch_rng), random_crops(batch, 4, 128, torch_rng))
