"""The backbone a model config names, built."""

from __future__ import annotations

from torch import nn

from model.asymdsd import init_weights
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


def init_backbone(encoder: Backbone) -> None:
    """The initialisation pretraining starts from: the ViT's reference initialisation (`init_weights`, and a
    trunc-normal CLS token); point networks keep PyTorch's defaults, as their papers train them."""
    if isinstance(encoder, PointEncoder):
        init_weights(encoder)
        if encoder.cls_token is not None:
            nn.init.trunc_normal_(encoder.cls_token, std=0.02)


def token_width(cfg: ModelConfig) -> int:
    """Width of the tokens the backbone `cfg` names returns, without building it."""
    return {"vit": cfg.encoder.dim, "pointnet": cfg.pointnet.widths[-1], "dgcnn": cfg.dgcnn.global_dim}[cfg.backbone]
