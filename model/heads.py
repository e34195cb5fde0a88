"""DINO-style projection head."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

from model.config import HeadConfig


class DINOHead(nn.Module):
    """Linear-GELU-Linear-GELU-Linear to a bottleneck, L2-normalise, weight-normalised prototypes.

    The prototype layer has a bias and a free, trainable magnitude g (no g = 1 fixing, no freezing).
    """

    def __init__(self, in_dim: int, cfg: HeadConfig) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, cfg.hidden_dim),
            nn.GELU(),
            nn.Linear(cfg.hidden_dim, cfg.hidden_dim),
            nn.GELU(),
            nn.Linear(cfg.hidden_dim, cfg.bottleneck_dim),
        )
        self.last_layer = weight_norm(nn.Linear(cfg.bottleneck_dim, cfg.num_prototypes), dim=0)

    def forward(self, x: Tensor) -> Tensor:
        z = F.normalize(self.mlp(x), dim=-1, eps=1e-6)
        return self.last_layer(z)
