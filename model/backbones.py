"""The backbone a model config names, built."""

from __future__ import annotations

from model.backbone import Backbone
from model.config import ModelConfig
from model.dgcnn import DGCNN
from model.encoder import PointEncoder
from model.pointnet import PointNet


def build_backbone(cfg: ModelConfig) -> Backbone:
    """`cfg.backbone`'s network with its section's settings (`encoder`/`tokenizer`, `pointnet`, `dgcnn`)."""
    if cfg.backbone == "pointnet":
        return PointNet(cfg.pointnet)
    if cfg.backbone == "dgcnn":
        return DGCNN(cfg.dgcnn)
    return PointEncoder(cfg.tokenizer, cfg.encoder)


def token_width(cfg: ModelConfig) -> int:
    """Width of the tokens the backbone `cfg` names returns, without building it."""
    return {"vit": cfg.encoder.dim, "pointnet": cfg.pointnet.widths[-1], "dgcnn": cfg.dgcnn.global_dim}[cfg.backbone]
