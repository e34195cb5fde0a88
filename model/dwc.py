"""Distillation with Contrast (Fu et al. 2022, arXiv 2202.04241) for any backbone.

Multi-crop self-distillation of global embeddings: the EMA teacher embeds the global crops, the student
every crop, and one DINO head per side maps an embedding to K prototypes. The distillation term is the
cross-entropy between the teacher's centred, sharpened distribution of global crop i and the student's
distribution of view v, averaged over every pair of differing views (v != i), as DINO pairs them. The
contrastive term is InfoNCE between the student's embeddings and the teacher's embeddings of the other
crops (`model.losses.contrastive_loss`), negatives from every other sample of the global batch:

    total = cls + loss.contrast.weight * contrast

Nothing is masked and there is no predictor, so the backbone only needs `model.backbone`'s surface.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.profiler import record_function

from model.asymdsd import init_weights
from model.backbone import Backbone, BackboneInput
from model.backbones import init_backbone
from model.batch import CropBatch, MultiCropBatch
from model.centering import Centering
from model.config import ModelConfig
from model.heads import DINOHead
from model.losses import contrastive_loss, student_log_probs, teacher_probs
from model.schedules import DistillSchedule
from model.target_stats import TargetStats, teacher_target_stats
from model.teacher_student import LossOutput, TeacherOutput, TeacherStudent


@dataclass
class CropViews:
    """The backbone inputs of every crop, crops flattened sample-major (row = b * C + c)."""

    batch_size: int
    global_inputs: BackboneInput  # the backbone's `prepare` output for B * Cg global crops
    local_inputs: BackboneInput | None  # and for B * Cl local crops
    device: torch.device

    def autocast(self, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
        """Autocast to `dtype` on the views' device (a no-op for None, i.e. fp32)."""
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)


def differing_view_cross_entropy(teacher: Tensor, student_logp: Tensor) -> Tensor:
    """Mean of H(T[b, i], S[b, v]) over samples b and pairs of differing views (v != i).

    teacher (B, Cg, K) probabilities of the global crops; student_logp (B, V, K) log-probabilities of the
    V >= Cg views, the first Cg of which are the same global crops. All pairs factorise as in
    `model.losses.pairwise_cross_entropy`; the Cg same-crop pairs are subtracted.
    """
    b, cg, v = teacher.shape[0], teacher.shape[1], student_logp.shape[1]
    every_pair = (teacher.sum(1) * student_logp.sum(1)).sum()
    same_crop = (teacher * student_logp[:, :cg]).sum()
    return -(every_pair - same_crop) / (b * (cg * v - cg))


class DwCStudent(nn.Module):
    """Backbone + DINO head; `forward(views, teacher)` returns the losses (under its own autocast, as
    `model.asymdsd.Student`, so an engine wrapping it cannot drop it)."""

    def __init__(self, cfg: ModelConfig, encoder: Backbone) -> None:
        super().__init__()
        self.cfg = cfg
        self.autocast_dtype: torch.dtype | None = None
        self.encoder = encoder
        self.cls_head = DINOHead(encoder.embedding_dim, cfg.head)
        init_backbone(encoder)
        init_weights(self.cls_head)

    def embed(self, inputs: BackboneInput) -> Tensor:
        with record_function("dwc/student_encoder"):
            return self.encoder.embedding(self.encoder(inputs))

    def forward(self, views: CropViews, teacher: TeacherOutput) -> LossOutput:
        with views.autocast(self.autocast_dtype):
            return self._losses(views, teacher)

    def _losses(self, views: CropViews, teacher: TeacherOutput) -> LossOutput:
        cfg, b = self.cfg, views.batch_size
        embeddings = [self.embed(views.global_inputs).view(b, cfg.num_global_crops, -1)]
        if views.local_inputs is not None:
            embeddings.append(self.embed(views.local_inputs).view(b, cfg.num_local_crops, -1))
        student = torch.cat(embeddings, dim=1)  # (B, V, E): global crops first
        with record_function("dwc/losses"):
            logp = student_log_probs(self.cls_head(student), cfg.loss.student_temp)
            terms = {"cls": differing_view_cross_entropy(teacher.cls_probs, logp)}
            total = terms["cls"]
            contrast = cfg.loss.contrast
            if contrast.weight > 0:
                num_local = student.shape[1] - cfg.num_global_crops
                view_crop = torch.tensor(list(range(cfg.num_global_crops)) + [-1] * num_local, device=student.device)
                terms["contrast"] = contrastive_loss(student, view_crop, teacher.cls_embed, contrast.temperature)
                total = total + contrast.weight * terms["contrast"]
        return LossOutput(total, {k: v.detach() for k, v in terms.items()})


class DwCTeacher(nn.Module):
    """EMA copy of the student's backbone and head plus the centring buffers; never trained.

    It runs in training mode as DINO's teacher does: batch norm normalises with its batch's statistics and
    keeps its own running estimates, which the exported teacher uses. For the ViT, `teacher.drop_path`
    decides, as for AsymDSD.
    """

    def __init__(self, cfg: ModelConfig, student: DwCStudent) -> None:
        super().__init__()
        self.cfg = cfg
        self.autocast_dtype: torch.dtype | None = None
        self.encoder = copy.deepcopy(student.encoder).float()
        self.cls_head = copy.deepcopy(student.cls_head).float()
        self.cls_center = Centering(cfg.head.num_prototypes, cfg.loss.center_momentum)
        self.requires_grad_(False)
        self.train()

    def train(self, mode: bool = True) -> DwCTeacher:
        return super().train(mode and (self.cfg.teacher.drop_path or self.cfg.backbone != "vit"))

    @torch.no_grad()
    def forward(self, views: CropViews, schedule: DistillSchedule) -> TeacherOutput:
        b = views.batch_size
        with record_function("dwc/teacher"), views.autocast(self.autocast_dtype):
            embedding = self.encoder.embedding(self.encoder(views.global_inputs))
            logits = self.cls_center(self.cls_head(embedding))
            probs = teacher_probs(logits, schedule.teacher_cls_temp)
        return TeacherOutput(cls_probs=probs.view(b, -1, probs.shape[-1]),
                             cls_embed=embedding.view(b, -1, embedding.shape[-1]))


class DwC(TeacherStudent):
    """Distillation with Contrast around `encoder` (a `model.backbone.Backbone`)."""

    def __init__(self, cfg: ModelConfig, encoder: Backbone) -> None:
        student = DwCStudent(cfg, encoder)
        super().__init__(cfg, student, DwCTeacher(cfg, student))

    @torch.no_grad()
    def prepare(self, batch: MultiCropBatch, generator: torch.Generator | None = None) -> CropViews:
        cfg, pc = self.cfg, self.cfg.patchify
        if batch.global_crops.points.shape[1] != cfg.num_global_crops:
            raise ValueError(f"batch has {batch.global_crops.points.shape[1]} global crops, "
                             f"config says {cfg.num_global_crops}")
        local = batch.local_crops if cfg.num_local_crops > 0 else None
        if local is not None and local.points.shape[1] != cfg.num_local_crops:
            raise ValueError(f"batch has {local.points.shape[1]} local crops, config says {cfg.num_local_crops}")
        encoder = self.student.encoder
        with record_function("dwc/prepare"):
            global_inputs = _prepare(encoder, batch.global_crops, pc.global_patches, pc.patch_size, generator)
            local_inputs = None if local is None else _prepare(encoder, local, pc.local_patches, pc.patch_size,
                                                                 generator)
        return CropViews(batch.batch_size, global_inputs, local_inputs, batch.global_crops.points.device)

    def target_stats(self, views: CropViews, teacher: TeacherOutput) -> dict[str, TargetStats]:
        return teacher_target_stats(teacher, None)


def _prepare(encoder: Backbone, crops: CropBatch, num_patches: int, patch_size: int,
             generator: torch.Generator | None) -> BackboneInput:
    """The backbone's input for every crop, flattened sample-major."""
    flat = crops.map(lambda t: t.flatten(0, 1))
    return encoder.prepare(flat.points, flat.num_points, num_patches, patch_size, flat.center_idx, flat.patch_idx,
                           generator)
