"""Classification heads as in the official AsymDSD code (remcofl/AsymDSD, `asymdsd/layers/classification_head.py`)
and the encoder + head classifier they sit on."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from launch.evaluation.features import Augmentation, InputSpec, Pooling, encode_pooled, feature_dim
from model.backbone import Backbone

HeadKind = Literal["linear", "mlp"]


def linear_head(in_dim: int, num_classes: int) -> nn.Module:
    """Linear probing: one Linear with bias."""
    return nn.Linear(in_dim, num_classes)


def mlp_head(in_dim: int, num_classes: int, hidden: Sequence[int] = (256, 256), dropout: float = 0.5) -> nn.Module:
    """Linear -> BatchNorm -> GELU -> Dropout per hidden width, then Linear; no linear has a bias."""
    layers: list[nn.Module] = []
    width = in_dim
    for h in hidden:
        layers += [nn.Linear(width, h, bias=False), nn.BatchNorm1d(h), nn.GELU(), nn.Dropout(dropout)]
        width = h
    layers.append(nn.Linear(width, num_classes, bias=False))
    return nn.Sequential(*layers)


def init_head(head: nn.Module) -> None:
    """Trunc-normal(0.02) linear weights and zero biases, the reference's initialisation."""
    for m in head.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def build_head(kind: HeadKind, in_dim: int, num_classes: int) -> nn.Module:
    head = linear_head(in_dim, num_classes) if kind == "linear" else mlp_head(in_dim, num_classes)
    init_head(head)
    return head


class PointClassifier(nn.Module):
    """Encoder + pooling + head. With `frozen_encoder` the encoder runs in eval mode without gradients."""

    def __init__(self, encoder: Backbone, head_kind: HeadKind, num_classes: int, pooling: Sequence[Pooling],
                 spec: InputSpec) -> None:
        super().__init__()
        self.encoder = encoder
        self.pooling = tuple(pooling)
        self.spec = spec
        self.head = build_head(head_kind, feature_dim(encoder, pooling), num_classes)
        self.frozen_encoder = False

    def set_frozen_encoder(self, frozen: bool) -> None:
        self.frozen_encoder = frozen
        self.encoder.requires_grad_(not frozen)

    def train(self, mode: bool = True) -> PointClassifier:
        super().train(mode)
        if self.frozen_encoder:
            self.encoder.eval()
        return self

    def forward(self, points: Tensor, num_points: Tensor, generator: torch.Generator,
                aug: Augmentation | None = None) -> Tensor:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen_encoder):
            feats = encode_pooled(self.encoder, points, num_points, self.spec, self.pooling, generator, aug)
        return self.head(feats)
