"""Where the encoder under evaluation comes from: an export directory, an official checkpoint, or a
randomly initialised copy of either's architecture (the baseline every pretrained number is read against).

DeepSpeed checkpoints are not read here: `model.export` turns one into an export directory (the
teacher encoder as safetensors), which is what evaluation takes.
"""

from __future__ import annotations

from typing import Any

import torch

from model.config import ModelConfig, load_model_config
from model.backbone import Backbone
from model.backbones import build_backbone, init_backbone
from model.export import load_encoder
from model.official import load_official_encoder


def random_encoder(cfg: ModelConfig, seed: int = 0, device: str | torch.device = "cpu") -> Backbone:
    """The architecture of `cfg` with the reference's pretraining initialisation, in eval mode."""
    torch.manual_seed(seed)
    encoder = build_backbone(cfg)
    init_backbone(encoder)
    return encoder.to(device).eval()


def load_encoder_source(export_dir: str | None = None, official_ckpt: str | None = None, branch: str = "teacher",
                        model_config: str | None = None, random_init: bool = False,
                        device: str | torch.device = "cpu") -> tuple[Backbone, ModelConfig, dict[str, Any]]:
    """(encoder, model config, provenance) from exactly one of an export directory or an official checkpoint.

    With `random_init` the weights are thrown away and re-initialised: same architecture, no pretraining.
    """
    if (export_dir is None) == (official_ckpt is None):
        raise ValueError("give exactly one encoder source: an export directory or an official checkpoint")
    if export_dir is not None:
        encoder, cfg, meta = load_encoder(export_dir, device)
        meta = {"source": "export", "path": export_dir, **meta}
    else:
        override = load_model_config(model_config) if model_config else None
        encoder, cfg, meta = load_official_encoder(official_ckpt, branch, override, device)
    if random_init:
        encoder = random_encoder(cfg, 0, device)
        meta = {**meta, "random_init": True}
    return encoder, cfg, meta
