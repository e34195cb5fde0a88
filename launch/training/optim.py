"""The client optimizer and the per-optimizer-step values of every schedule.

All schedules are pure functions of the optimizer step, with `steps_per_epoch` taken from the
*global* batch and the manifest's sample count; so nothing about them needs checkpointing and a run
with more ranks (same global batch) sees the same values at the same step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from launch.training.config import PretrainConfig
from model.schedules import DistillSchedule, cosine, distill_schedule, warmup_cosine


class SkippableAdamW(torch.optim.AdamW):
    """AdamW whose next `step()` can be turned into a no-op.

    A non-finite loss must not move the weights *or* the Adam moments. DeepSpeed calls `step()` on the
    client optimizer at every accumulation boundary (also under ZeRO, on the fp32 partitions); setting
    `skip_next` before that boundary leaves parameters and state exactly as they were, and the engine
    then zeroes the gradients as usual.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.skip_next = False

    @torch.no_grad()
    def step(self, closure=None):
        if self.skip_next:
            self.skip_next = False
            return None
        return super().step(closure)

    def set_hyperparameters(self, lr: float, weight_decay: float) -> None:
        for group in self.param_groups:
            group["lr"] = lr
            group["weight_decay"] = weight_decay


@dataclass(frozen=True)
class StepValues:
    lr: float
    weight_decay: float
    distill: DistillSchedule

    def as_metrics(self) -> dict[str, float]:
        return {
            "opt/lr": self.lr,
            "opt/weight_decay": self.weight_decay,
            "teacher/momentum": self.distill.momentum,
            "teacher/cls_temp": self.distill.teacher_cls_temp,
            "teacher/patch_temp": self.distill.teacher_patch_temp,
        }


@dataclass(frozen=True)
class Schedule:
    cfg: PretrainConfig
    steps_per_epoch: int

    @property
    def total_steps(self) -> int:
        return max(1, round(self.cfg.train.epochs * self.steps_per_epoch))

    def at(self, step: int) -> StepValues:
        o = self.cfg.optim
        total = self.total_steps
        lr = warmup_cosine(step, total, round(o.warmup_epochs * self.steps_per_epoch), o.lr_start, o.lr, o.lr_end)
        wd = o.weight_decay if o.weight_decay_end is None else cosine(step, total, o.weight_decay, o.weight_decay_end)
        return StepValues(lr, wd, distill_schedule(self.cfg.model, step, self.steps_per_epoch, total))
