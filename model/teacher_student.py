"""What every self-distillation method shares: a trained student, its EMA teacher, and one step's bookkeeping.

A method (`model.asymdsd.AsymDSD`, `model.dwc.DwC`) builds its student and teacher and implements
`prepare(batch, generator) -> views`; the training loop then runs `teacher(views, schedule)`, the student
(inside the engine) on the teacher's output, and `end_step`. Student and teacher share parameter names,
so the EMA pairs them by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from model.batch import MultiCropBatch
from model.centering import Centering
from model.compile import compile_regions
from model.config import ModelConfig
from model.schedules import DistillSchedule


@dataclass
class TeacherOutput:
    cls_probs: Tensor | None = None  # (B, Cg, K) centred, sharpened CLS distributions
    patch_probs: Tensor | None = None  # (B * Cg, P, K) patch distributions at every position
    cls_embed: Tensor | None = None  # (B, Cg, D) pre-head CLS embeddings
    patch_features: Tensor | None = None  # (B * Cg, P, D) final-layer patch features ('mask' mode)


@dataclass
class LossOutput:
    total: Tensor
    terms: dict[str, Tensor] = field(default_factory=dict)  # detached, for logging


class TeacherStudent:
    """Holds the student and teacher modules and runs the parts of a step that are not the student's forward."""

    def __init__(self, cfg: ModelConfig, student: nn.Module, teacher: nn.Module) -> None:
        self.cfg = cfg
        self.student = student
        self.teacher = teacher
        self._pairs: tuple[list[Tensor], list[Tensor]] | None = None

    def prepare(self, batch: MultiCropBatch, generator: torch.Generator | None = None):
        """The views teacher and student share, computed once per micro-batch without parameters."""
        raise NotImplementedError

    def target_stats(self, views, teacher: TeacherOutput) -> dict:
        """Statistics of the teacher's targets per head (`model.target_stats`), for the collapse signals."""
        raise NotImplementedError

    def to(self, device: torch.device | str) -> TeacherStudent:
        self.student.to(device)
        self.teacher.to(device)
        self._pairs = None
        return self

    def set_autocast(self, dtype: torch.dtype | None) -> None:
        """Run teacher and student forwards under autocast to `dtype` (None: fp32); weights stay fp32."""
        self.student.autocast_dtype = self.teacher.autocast_dtype = dtype

    def compile(self) -> int:
        """`torch.compile` the student's and teacher's regions in place (model/compile.py); returns how many."""
        return compile_regions(self.student) + compile_regions(self.teacher)

    def losses(
        self, batch: MultiCropBatch, schedule: DistillSchedule, generator: torch.Generator | None = None
    ) -> LossOutput:
        """One step's forward passes: prepare the views, run the teacher, then the student on its targets.

        A training engine that wraps the student runs the same three calls with itself in the student's place.
        """
        views = self.prepare(batch, generator)
        return self.student(views, self.teacher(views, schedule))

    @torch.no_grad()
    def end_step(self, momentum: float, applied: bool = True) -> None:
        """Close one optimizer step (after all its micro-batches): teacher EMA and centre updates.

        A step that was not applied (non-finite loss) moves neither the teacher nor the centres.
        The centre commit is a collective when distributed: every rank calls this at every step.
        """
        centers = [m for m in self.teacher.modules() if isinstance(m, Centering)]
        for center in centers:
            center.commit() if applied else center.discard()
        if applied:
            self.update_teacher(momentum)

    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        """theta_t <- m theta_t + (1 - m) theta_s over the shared parameters; skipped when m >= 1.

        Call it only after an optimizer step was applied (not after a skipped, non-finite step). Both
        sides are fp32: mixed precision lives in autocast, never in the weights, because at late-training
        learning rates a step is far below bf16's resolution and a low-precision copy would move in
        rounding steps instead of with the student. Buffers (batch-norm statistics) are the teacher's own.
        """
        if momentum >= 1.0:
            return
        t_params, s_params = self._ema_pairs()
        if any(p.dtype != torch.float32 for p in s_params):
            raise TypeError("the EMA reads fp32 student weights; keep the student fp32 and use autocast")
        torch._foreach_lerp_(t_params, [p.detach() for p in s_params], 1.0 - momentum)

    def _ema_pairs(self) -> tuple[list[Tensor], list[Tensor]]:
        """Teacher parameters and their student counterparts, matched by name (cached).

        Engines cast a module in place (the Parameter objects survive), so the pairs stay valid.
        """
        if self._pairs is None:
            student = dict(self.student.named_parameters())
            names = [n for n, _ in self.teacher.named_parameters()]
            self._pairs = ([p for _, p in self.teacher.named_parameters()], [student[n] for n in names])
        return self._pairs
