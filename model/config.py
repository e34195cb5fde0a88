"""Typed model configuration, loaded from `configs/model/*.yaml`.

Every section is a strict pydantic model: an unknown key or a value outside the allowed set fails at
load time with the dotted key, the offending value and what is allowed, before any tensor is built.
Defaults are the AsymDSD-S values of the official implementation (remcofl/AsymDSD).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, model_validator

from configuration import StrictModel, load_config, validate

TrainingMode = Literal["cls_mask", "cls", "mask"]
Method = Literal["asymdsd", "dwc"]
BackboneKind = Literal["vit", "pointnet", "dgcnn"]


class TokenizerConfig(StrictModel):
    """Mini-PointNet patch embedding.

    `hidden_dims` lists the per-point MLP stages; after every stage but the last the max-pooled patch
    descriptor is concatenated to each point. S uses [[128, 256], [512]] without biases, B and L use
    [[256, 512, 1024], [2048]] with biases. The final stage always ends at the encoder width.
    """

    hidden_dims: list[list[int]] = Field(default_factory=lambda: [[128, 256], [512]], min_length=2)
    bias: bool = False
    num_chunks: int = Field(1, ge=1, description="split the patch batch into chunks (memory only)")
    checkpoint: bool = Field(False, description="activation-checkpoint each chunk")
    pos_hidden_dim: int = Field(128, ge=1)

    @model_validator(mode="after")
    def _stages_not_empty(self) -> TokenizerConfig:
        if any(len(stage) == 0 for stage in self.hidden_dims):
            raise ValueError("every stage of tokenizer.hidden_dims needs at least one width")
        return self


class AttentionConfig(StrictModel):
    """Shared check of the transformer sections: heads must split the width evenly."""

    @model_validator(mode="after")
    def _heads_divide_dim(self) -> AttentionConfig:
        if self.dim % self.num_heads:
            raise ValueError(f"dim={self.dim} is not divisible by num_heads={self.num_heads}")
        return self


class EncoderConfig(AttentionConfig):
    dim: int = Field(384, ge=1)
    depth: int = Field(12, ge=1)
    num_heads: int = Field(6, ge=1)
    mlp_ratio: float = Field(4.0, gt=0)
    norm_eps: float = Field(1e-5, gt=0)
    drop_path: float = Field(0.0, ge=0, lt=1)
    drop_path_schedule: Literal["uniform", "linear"] = "uniform"
    cls_token: bool = True
    checkpoint_blocks: bool = Field(False, description="activation-checkpoint student encoder blocks")


class PointNetConfig(StrictModel):
    """PointNet's feature extractor without its T-nets (Qi et al. 2017): a shared per-point MLP, each layer
    a biased linear, batch norm and ReLU, max-pooled into the global embedding."""

    widths: list[int] = Field(default_factory=lambda: [64, 64, 64, 128, 1024], min_length=1)


class DGCNNConfig(StrictModel):
    """DGCNN's classifier feature extractor (Wang et al. 2019): EdgeConv layers on a k-NN graph rebuilt in
    each layer's feature space, their outputs concatenated into a per-point linear to `global_dim`, then
    max and average pooling."""

    k: int = Field(20, ge=1, description="neighbours per point in every EdgeConv graph")
    edge_widths: list[int] = Field(default_factory=lambda: [64, 64, 128, 256], min_length=1)
    global_dim: int = Field(1024, ge=1)
    negative_slope: float = Field(0.2, ge=0, description="LeakyReLU slope")


class PredictorConfig(AttentionConfig):
    """Cross-attention-only predictor (no self-attention between masked queries)."""

    dim: int = Field(192, ge=1)
    depth: int = Field(6, ge=1)
    num_heads: int = Field(3, ge=1)
    mlp_ratio: float = Field(4.0, gt=0)


class HeadConfig(StrictModel):
    """DINO projection head: 3-layer MLP, L2-normalised bottleneck, weight-normalised prototypes."""

    hidden_dim: int = Field(1024, ge=1)
    bottleneck_dim: int = Field(256, ge=1)
    num_prototypes: int = Field(4096, ge=2)


class PatchifyConfig(StrictModel):
    global_patches: int = Field(64, ge=1)
    local_patches: int = Field(16, ge=1)
    patch_size: int = Field(32, ge=1, description="points per patch (k of the kNN grouping)")


class MaskingConfig(StrictModel):
    """Inverse block masking: the visible context is a union of kNN blocks of patch centres."""

    ratio: float = Field(0.7, gt=0, lt=1)
    num_masks: int = Field(4, ge=1, description="independent masks per global crop (multi-mask)")
    block_ratio: float = Field(0.1, gt=0, le=1)
    adjust_ratio: float = Field(0.1, ge=0, lt=1)


@dataclass(frozen=True)
class MaskCounts:
    num_masked: int
    num_visible: int
    block_size: int
    num_seeds: int


def mask_counts(num_patches: int, cfg: MaskingConfig) -> MaskCounts:
    """Exact counts for P patches: n_m = round(r P), k_b = floor(b P), n_s = round(P (1 - r + a) / k_b)."""
    num_masked = round(cfg.ratio * num_patches)
    block_size = math.floor(cfg.block_ratio * num_patches)
    if not 0 < num_masked < num_patches:
        raise ValueError(
            f"masking.ratio={cfg.ratio} masks {num_masked} of {num_patches} patches; need between 1 and P-1"
        )
    if block_size < 1:
        raise ValueError(f"masking.block_ratio={cfg.block_ratio} gives blocks of 0 of {num_patches} patches")
    num_seeds = round(num_patches * (1 - cfg.ratio + cfg.adjust_ratio) / block_size)
    num_seeds = min(max(num_seeds, 1), num_patches)
    return MaskCounts(num_masked, num_patches - num_masked, block_size, num_seeds)


class TemperatureConfig(StrictModel):
    """Linear warm-up from `start` to `end` over `warmup_epochs`, then constant."""

    start: float = Field(gt=0)
    end: float = Field(gt=0)
    warmup_epochs: float = Field(10.0, ge=0)


class ContrastConfig(StrictModel):
    """Distillation with Contrast: InfoNCE between student and teacher CLS embeddings."""

    weight: float = Field(0.0, ge=0)
    temperature: float = Field(0.2, gt=0)


class LossConfig(StrictModel):
    student_temp: float = Field(0.1, gt=0)
    teacher_cls_temp: TemperatureConfig = TemperatureConfig(start=0.04, end=0.07)
    teacher_patch_temp: TemperatureConfig = TemperatureConfig(start=0.05, end=0.07)
    center_momentum: float = Field(0.9, ge=0, lt=1)
    cls_weight: float = Field(1.0, ge=0)
    patch_weight: float = Field(1.0, ge=0)
    koleo_weight: float = Field(0.01, ge=0)
    regression_weight: float = Field(1.0, ge=0, description="Huber feature regression, `mask` mode only")
    huber_beta: float = Field(2.0, gt=0)
    patch_loss_chunk: int = Field(
        8192, ge=0, description="rows per checkpointed patch-loss chunk; 0 computes it in one piece"
    )
    contrast: ContrastConfig = ContrastConfig()


class TeacherConfig(StrictModel):
    momentum_start: float = Field(0.995, ge=0, le=1)
    momentum_end: float = Field(1.0, ge=0, le=1)
    drop_path: bool = Field(
        True,
        description="apply the encoder's drop path in the teacher forward too; the reference keeps the"
        " teacher in train mode, so B/L targets are stochastic",
    )


class ModelConfig(StrictModel):
    """`method` picks the objective: AsymDSD (the ViT with masked point modeling and multi-crop CLS
    distillation, `mode` choosing the branches) or Distillation with Contrast (`dwc`: multi-crop
    distillation of global embeddings plus the contrastive term, for any `backbone`)."""

    name: str = "asymdsd_s"
    method: Method = "asymdsd"
    backbone: BackboneKind = "vit"
    mode: TrainingMode = "cls_mask"
    num_global_crops: int = Field(2, ge=1)
    num_local_crops: int = Field(4, ge=0)
    tokenizer: TokenizerConfig = TokenizerConfig()
    encoder: EncoderConfig = EncoderConfig()
    pointnet: PointNetConfig = PointNetConfig()
    dgcnn: DGCNNConfig = DGCNNConfig()
    predictor: PredictorConfig = PredictorConfig()
    head: HeadConfig = HeadConfig()
    patchify: PatchifyConfig = PatchifyConfig()
    masking: MaskingConfig = MaskingConfig()
    loss: LossConfig = LossConfig()
    teacher: TeacherConfig = TeacherConfig()

    @model_validator(mode="after")
    def _mode_is_consistent(self) -> ModelConfig:
        if self.method == "dwc":
            return self._dwc_is_consistent()
        if self.backbone != "vit":
            raise ValueError(f"method 'asymdsd' trains the ViT (backbone: vit), not backbone '{self.backbone}'; "
                             "method 'dwc' trains any backbone")
        if self.mode == "mask":
            if self.encoder.cls_token:
                raise ValueError("mode 'mask' (AsymSD-MPM) has no CLS token: set encoder.cls_token: false")
            if self.loss.contrast.weight > 0:
                raise ValueError("loss.contrast needs CLS embeddings; it is not available in mode 'mask'")
        elif not self.encoder.cls_token:
            raise ValueError(f"mode '{self.mode}' distils CLS tokens: encoder.cls_token must be true")
        if self.mode == "cls" and self.num_global_crops < 2:
            raise ValueError("mode 'cls' compares global crops pairwise: num_global_crops must be >= 2")
        if self.mode == "cls_mask" and self.num_global_crops < 2:
            raise ValueError("mode 'cls_mask' pairs global crop 0 with crop 1: num_global_crops must be >= 2")
        if self.masking.num_masks > 0 and self.mode != "cls":
            mask_counts(self.patchify.global_patches, self.masking)
        return self

    def _dwc_is_consistent(self) -> ModelConfig:
        if self.backbone == "vit" and not self.encoder.cls_token:
            raise ValueError("method 'dwc' distils the ViT's CLS token: set encoder.cls_token: true")
        if self.num_global_crops < 2 and self.num_local_crops == 0:
            raise ValueError("method 'dwc' compares differing views: it needs num_global_crops >= 2 or local crops")
        return self

    @property
    def uses_masking(self) -> bool:
        return self.method == "asymdsd" and self.mode in ("cls_mask", "mask")

    @property
    def uses_cls(self) -> bool:
        return self.method == "dwc" or self.mode in ("cls_mask", "cls")


def model_config_from_dict(data: dict[str, Any], source: str = "<dict>") -> ModelConfig:
    return validate(ModelConfig, data, source, "model config")


def load_model_config(path: str | os.PathLike) -> ModelConfig:
    return load_config(ModelConfig, path, what="model config")
