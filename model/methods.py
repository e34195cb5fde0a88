"""The training method a model config names, built around its backbone."""

from __future__ import annotations

from model.asymdsd import AsymDSD
from model.backbones import build_backbone
from model.config import ModelConfig
from model.dwc import DwC
from model.teacher_student import TeacherStudent


def build_method(cfg: ModelConfig) -> TeacherStudent:
    """AsymDSD (the ViT it was designed for) or Distillation with Contrast around `cfg.backbone`."""
    if cfg.method == "dwc":
        return DwC(cfg, build_backbone(cfg))
    return AsymDSD(cfg)
