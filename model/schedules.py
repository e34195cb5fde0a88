"""Per-optimizer-step schedules: lr, teacher temperatures, EMA momentum.

Pure functions of the optimizer step. The trainer computes `steps_per_epoch` from the *global*
batch (the reference divides by the per-device batch, which mis-scales every schedule under DDP).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from model.config import ModelConfig, TemperatureConfig


def cosine(step: int, total_steps: int, start: float, end: float) -> float:
    """Half-cosine from `start` (step 0) to `end` (step `total_steps` and after)."""
    if total_steps <= 0:
        return end
    t = min(max(step, 0), total_steps) / total_steps
    return end + 0.5 * (start - end) * (1.0 + math.cos(math.pi * t))


def linear(step: int, total_steps: int, start: float, end: float) -> float:
    """Linear from `start` (step 0) to `end` (step `total_steps`), constant after."""
    if total_steps <= 0 or step >= total_steps:
        return end
    return start + (end - start) * max(step, 0) / total_steps


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, start: float, peak: float, end: float) -> float:
    """Linear warm-up start -> peak over `warmup_steps`, then cosine peak -> end at `total_steps`."""
    if step < warmup_steps:
        return linear(step, warmup_steps, start, peak)
    return cosine(step - warmup_steps, total_steps - warmup_steps, peak, end)


def temperature(cfg: TemperatureConfig, step: int, steps_per_epoch: int) -> float:
    return linear(step, round(cfg.warmup_epochs * steps_per_epoch), cfg.start, cfg.end)


@dataclass(frozen=True)
class DistillSchedule:
    """The model-side values of one optimizer step."""

    teacher_cls_temp: float
    teacher_patch_temp: float
    momentum: float


def distill_schedule(cfg: ModelConfig, step: int, steps_per_epoch: int, total_steps: int) -> DistillSchedule:
    return DistillSchedule(
        teacher_cls_temp=temperature(cfg.loss.teacher_cls_temp, step, steps_per_epoch),
        teacher_patch_temp=temperature(cfg.loss.teacher_patch_temp, step, steps_per_epoch),
        momentum=cosine(step, total_steps, cfg.teacher.momentum_start, cfg.teacher.momentum_end),
    )
