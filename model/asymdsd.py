"""AsymDSD meta-architecture: batch preparation, EMA teacher, asymmetric student and their losses.

Split so that a training engine can wrap the student alone:

* `AsymDSD.prepare` (parameter-free, no grad): per-crop normalisation, patchify, inverse block masks.
* `Teacher` (fp32, never trained): encoder + heads on the unmasked global crops, centred and sharpened.
* `Student` (the only module an optimizer or DeepSpeed engine sees): `student(views, teacher_out)`
  returns the losses.
* `AsymDSD.end_step(m, applied)` (`model.teacher_student`): after each optimizer step, the EMA of the
  student into the teacher and the centre updates, or, for a skipped step, dropping that step's centre
  statistics.

Shapes follow the reference: crops are flattened sample-major (row = b * C + c) and
masked views crop-major (row = (b * Cg + c) * M + m).
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.profiler import record_function

from model.batch import CropBatch, MultiCropBatch
from model.centering import Centering
from model.config import ModelConfig
from model.encoder import PointEncoder
from model.heads import DINOHead
from model.layers import SelfAttention
from model.losses import (
    contrastive_loss,
    koleo_loss,
    pairwise_cross_entropy,
    patch_loss,
    regression_loss,
    student_log_probs,
    teacher_probs,
)
from model.masking import inverse_block_mask, mask_counts, split_mask
from model.patchify import Patches, patchify
from model.predictor import Predictor
from model.schedules import DistillSchedule
from model.target_stats import TargetStats, teacher_target_stats
from model.teacher_student import LossOutput, TeacherOutput, TeacherStudent


@dataclass
class Views:
    """Everything teacher and student share, computed once per batch without parameters."""

    batch_size: int
    global_patches: Patches  # B * Cg crops
    local_patches: Patches | None  # B * Cl crops
    visible_idx: Tensor | None  # (B * Cg * M, n_visible)
    masked_idx: Tensor | None  # (B * Cg * M, n_masked)

    def autocast(self, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
        """Autocast to `dtype` on the views' device (a no-op for None, i.e. fp32)."""
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.global_patches.centers.device.type, dtype=dtype)


def _patchify_crops(crops: CropBatch, num_patches: int, patch_size: int,
                    generator: torch.Generator | None) -> Patches:
    """Patches of every crop, crops flattened sample-major (row = b * C + c)."""
    flat = crops.map(lambda t: t.flatten(0, 1))
    return patchify(flat.points, flat.num_points, num_patches, patch_size, flat.center_idx, flat.patch_idx, generator)


def init_weights(module: nn.Module) -> None:
    """Reference initialisation: trunc-normal(0.02) for nn.Linear weights, zero biases.

    Exceptions, as in the reference: packed attention in-projections keep Xavier-uniform (they are
    nn.MultiheadAttention's `in_proj_weight` there), and the weight-normalised prototype layer keeps
    PyTorch's default init with g = row norms (the reference's init writes into the computed weight,
    which leaves g and v untouched); its bias is zeroed.
    """
    for m in module.modules():
        if isinstance(m, nn.Linear):
            if not parametrize.is_parametrized(m):
                nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    # After the Linear pass, which would otherwise overwrite it (modules() visits the attention
    # module before its qkv child): Xavier-uniform over the packed (3D, D) weight.
    for m in module.modules():
        if isinstance(m, SelfAttention):
            nn.init.xavier_uniform_(m.qkv.weight)


class Student(nn.Module):
    """Encoder, predictor, mask token and heads; `forward` returns the training losses.

    `autocast_dtype` (None: fp32) is applied inside `forward`: an engine that wraps the student
    (DeepSpeed's turns off an autocast opened around it) cannot drop it, and the weights stay fp32.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.autocast_dtype: torch.dtype | None = None
        d = cfg.encoder.dim
        self.encoder = PointEncoder(cfg.tokenizer, cfg.encoder)
        if cfg.uses_masking:
            self.predictor = Predictor(d, cfg.predictor, cfg.encoder.norm_eps)
            self.mask_token = nn.Parameter(torch.zeros(1, 1, d))
            self.patch_head = DINOHead(d, cfg.head)
        if cfg.uses_cls:
            self.cls_head = DINOHead(d, cfg.head)
        init_weights(self)
        for token in (self.encoder.cls_token, getattr(self, "mask_token", None)):
            if token is not None:
                nn.init.trunc_normal_(token, std=0.02)

    # -- branches ---------------------------------------------------------------------------------

    def _masked_views(self, tokens: Tensor, pe: Tensor, views: Views) -> tuple[Tensor, Tensor]:
        """Encode the visible tokens of every masked view and predict the masked ones.

        Returns (encoder output (R, [1 +] n_visible, D), predictions (R, n_masked, D)).
        """
        m = self.cfg.masking.num_masks
        crop = torch.arange(views.visible_idx.shape[0], device=tokens.device)[:, None] // m
        with record_function("asymdsd/student_encoder"):
            memory = self.encoder.forward_tokens(tokens[crop, views.visible_idx], pe[crop, views.visible_idx])
        with record_function("asymdsd/predictor"):
            pred = self.predictor(self.mask_token, pe[crop, views.masked_idx], memory)
        return memory, pred

    def _local_cls(self, views: Views) -> Tensor | None:
        if views.local_patches is None:
            return None
        with record_function("asymdsd/student_encoder"):
            return self.encoder(views.local_patches)[:, 0].view(views.batch_size, -1, self.cfg.encoder.dim)

    def forward(self, views: Views, teacher: TeacherOutput) -> LossOutput:
        with views.autocast(self.autocast_dtype):
            return self._losses(views, teacher)

    def _losses(self, views: Views, teacher: TeacherOutput) -> LossOutput:
        cfg, loss_cfg = self.cfg, self.cfg.loss
        b, cg, m, d = views.batch_size, cfg.num_global_crops, cfg.masking.num_masks, cfg.encoder.dim
        tau = loss_cfg.student_temp
        with record_function("asymdsd/student_encoder"):
            tokens, pe = self.encoder.embed(views.global_patches)
        terms: dict[str, Tensor] = {}
        weights: dict[str, float] = {}
        cls_views: list[Tensor] = []  # (B, V_i, D) pre-head student CLS embeddings
        view_crop: list[int] = []  # source global crop of each view (-1: local)
        pred = None

        if cfg.mode == "cls_mask":
            first = slice(None, None, cg)  # global crop 0 of every sample (rows b * Cg)
            with record_function("asymdsd/student_encoder"):
                unmasked = self.encoder.forward_tokens(tokens[first], pe[first])
            memory, pred = self._masked_views(tokens, pe, views)
            cls_views += [unmasked[:, :1], memory[:, 0].view(b, cg * m, d)]
            view_crop += [0] + [c for c in range(cg) for _ in range(m)]
            koleo_input = torch.cat(cls_views, dim=1)
        elif cfg.mode == "cls":
            with record_function("asymdsd/student_encoder"):
                cls_views.append(self.encoder.forward_tokens(tokens, pe)[:, 0].view(b, cg, d))
            view_crop += list(range(cg))
            koleo_input = cls_views[0]
        else:  # mask
            memory, pred = self._masked_views(tokens, pe, views)

        local = self._local_cls(views) if cfg.uses_cls else None
        with record_function("asymdsd/losses"):
            if cfg.uses_cls:
                if local is not None:
                    cls_views.append(local)
                    view_crop += [-1] * local.shape[1]
                cls_logp = student_log_probs(self.cls_head(torch.cat(cls_views, dim=1)), tau)
                terms["cls"] = self._cls_loss(teacher.cls_probs, cls_logp, 0 if local is None else local.shape[1])
                weights["cls"] = loss_cfg.cls_weight
                if loss_cfg.koleo_weight > 0 and b > 1:
                    terms["koleo"] = koleo_loss(koleo_input)
                    weights["koleo"] = loss_cfg.koleo_weight
                if loss_cfg.contrast.weight > 0:
                    terms["contrast"] = contrastive_loss(
                        torch.cat(cls_views, dim=1),
                        torch.tensor(view_crop, device=tokens.device),
                        teacher.cls_embed,
                        loss_cfg.contrast.temperature,
                    )
                    weights["contrast"] = loss_cfg.contrast.weight
            if pred is not None:
                terms["patch"] = patch_loss(
                    self.patch_head, pred, teacher.patch_probs, views.masked_idx, m, tau, loss_cfg.patch_loss_chunk
                )
                weights["patch"] = loss_cfg.patch_weight
                if cfg.mode == "mask" and loss_cfg.regression_weight > 0:
                    terms["regression"] = regression_loss(
                        pred, teacher.patch_features, views.masked_idx, m, loss_cfg.huber_beta
                    )
                    weights["regression"] = loss_cfg.regression_weight
            total = sum(weights[k] * terms[k] for k in terms) / sum(weights.values())
        return LossOutput(total, {k: v.detach() for k, v in terms.items()})

    def _cls_loss(self, teacher_probs_: Tensor, student_logp: Tensor, num_local: int) -> Tensor:
        """Average of the CLS terms over view groups.

        Student views are ordered [global views..., local crops]. cls_mask: the unmasked crop 0 vs
        teacher crop 1 only; all masked views vs both teacher crops (same-crop pairs included);
        local crops vs both teacher crops. cls: unmasked globals vs all teacher crops
        (identical-crop pairs included); local crops vs all teacher crops.
        """
        num_global_views = student_logp.shape[1] - num_local
        groups = []
        if self.cfg.mode == "cls_mask":
            groups.append(pairwise_cross_entropy(teacher_probs_[:, 1:2], student_logp[:, :1]))
            groups.append(pairwise_cross_entropy(teacher_probs_, student_logp[:, 1:num_global_views]))
        else:
            groups.append(pairwise_cross_entropy(teacher_probs_, student_logp[:, :num_global_views]))
        if num_local:
            groups.append(pairwise_cross_entropy(teacher_probs_, student_logp[:, num_global_views:]))
        return sum(groups) / len(groups)


class Teacher(nn.Module):
    """EMA copy of the student's encoder and heads, plus the centering buffers.

    The weights stay fp32 (a bf16 EMA at m ~ 0.996-1 would stall); the forward runs under autocast to
    `autocast_dtype` like the reference's, so under bf16/fp16 the teacher's matmuls are too, while
    centering and the softmax are computed in fp32.
    """

    def __init__(self, cfg: ModelConfig, student: Student) -> None:
        super().__init__()
        self.cfg = cfg
        self.autocast_dtype: torch.dtype | None = None
        self.encoder = copy.deepcopy(student.encoder).float()
        if cfg.uses_cls:
            self.cls_head = copy.deepcopy(student.cls_head).float()
            self.cls_center = Centering(cfg.head.num_prototypes, cfg.loss.center_momentum)
        if cfg.uses_masking:
            self.patch_head = copy.deepcopy(student.patch_head).float()
            self.patch_center = Centering(cfg.head.num_prototypes, cfg.loss.center_momentum)
        self.requires_grad_(False)
        # The reference never calls eval() on the teacher: with drop path (B/L) its targets are
        # stochastic. `teacher.drop_path: false` gives the deterministic variant.
        self.train(cfg.teacher.drop_path)

    def train(self, mode: bool = True) -> Teacher:
        return super().train(mode and self.cfg.teacher.drop_path)

    @torch.no_grad()
    def forward(self, views: Views, schedule: DistillSchedule) -> TeacherOutput:
        b = views.batch_size
        with record_function("asymdsd/teacher"), views.autocast(self.autocast_dtype):
            out = self.encoder(views.global_patches)
            result = TeacherOutput()
            patches = out
            if self.cfg.uses_cls:
                cls = out[:, 0]
                patches = out[:, 1:]
                logits = self.cls_center(self.cls_head(cls))
                result.cls_probs = teacher_probs(logits, schedule.teacher_cls_temp).view(b, -1, logits.shape[-1])
                result.cls_embed = cls.view(b, -1, cls.shape[-1])
            if self.cfg.uses_masking:
                logits = self.patch_center(self.patch_head(patches))
                result.patch_probs = teacher_probs(logits, schedule.teacher_patch_temp)
                if self.cfg.mode == "mask":
                    result.patch_features = patches
        return result


class AsymDSD(TeacherStudent):
    """The AsymDSD student and teacher; `prepare` patchifies the crops and draws the inverse block masks."""

    def __init__(self, cfg: ModelConfig) -> None:
        student = Student(cfg)
        super().__init__(cfg, student, Teacher(cfg, student))

    @torch.no_grad()
    def prepare(self, batch: MultiCropBatch, generator: torch.Generator | None = None) -> Views:
        cfg = self.cfg
        g = batch.global_crops
        if g.points.shape[1] != cfg.num_global_crops:
            raise ValueError(f"batch has {g.points.shape[1]} global crops, config says {cfg.num_global_crops}")
        local = batch.local_crops if cfg.uses_cls and cfg.num_local_crops > 0 else None
        if local is not None and local.points.shape[1] != cfg.num_local_crops:
            raise ValueError(f"batch has {local.points.shape[1]} local crops, config says {cfg.num_local_crops}")
        with record_function("asymdsd/patchify"):
            pc = cfg.patchify
            global_patches = _patchify_crops(g, pc.global_patches, pc.patch_size, generator)
            local_patches = None if local is None else _patchify_crops(local, pc.local_patches, pc.patch_size, generator)
            visible_idx = masked_idx = None
            if cfg.uses_masking:
                mask = inverse_block_mask(global_patches.centers, cfg.masking, generator)
                visible_idx, masked_idx = split_mask(mask, mask_counts(pc.global_patches, cfg.masking).num_visible)
        return Views(batch.batch_size, global_patches, local_patches, visible_idx, masked_idx)

    def target_stats(self, views: Views, teacher: TeacherOutput) -> dict[str, TargetStats]:
        return teacher_target_stats(teacher, views.masked_idx)
