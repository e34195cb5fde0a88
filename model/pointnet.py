"""PointNet's feature extractor (Qi et al. 2017, "PointNet: Deep Learning on Point Sets for 3D
Classification and Segmentation") as a point backbone, without the input and feature T-nets."""

from __future__ import annotations

from torch import Tensor, nn

from model.backbone import PointBackbone, PointCloud, fill_padding
from model.config import PointNetConfig
from model.point_layers import PointLayer


class PointNet(PointBackbone):
    """A shared per-point MLP from xyz through `widths`, each layer a biased linear (the paper's 1x1
    convolutions), batch norm and ReLU, the last layer included; its global embedding is the max pool."""

    embedding_pooling = ("max",)

    def __init__(self, cfg: PointNetConfig) -> None:
        super().__init__()
        self.dim = cfg.widths[-1]
        dims = [3, *cfg.widths]
        self.layers = nn.ModuleList(PointLayer(i, o, True, nn.ReLU()) for i, o in zip(dims[:-1], dims[1:]))

    def forward(self, cloud: PointCloud) -> Tensor:
        """(C, N, dim) per-point features; padded rows hold the mean of the valid ones."""
        valid = cloud.valid
        x = cloud.points
        for layer in self.layers:
            x = layer(x, valid)
        return fill_padding(x, valid)
