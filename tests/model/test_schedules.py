"""Per-step schedules: lr warm-up + cosine, EMA momentum 0.995 -> 1, teacher temperature warm-ups."""

from __future__ import annotations

import pytest

from model.config import ModelConfig
from model.schedules import cosine, distill_schedule, warmup_cosine


def test_lr_schedule_matches_reference_formula():
    w, t = 100, 1000
    assert warmup_cosine(0, t, w, 1e-7, 5e-4, 1e-6) == pytest.approx(1e-7)
    assert warmup_cosine(50, t, w, 1e-7, 5e-4, 1e-6) == pytest.approx(1e-7 + (5e-4 - 1e-7) * 0.5)
    assert warmup_cosine(100, t, w, 1e-7, 5e-4, 1e-6) == pytest.approx(5e-4)
    assert warmup_cosine(550, t, w, 1e-7, 5e-4, 1e-6) == pytest.approx(1e-6 + 0.5 * (5e-4 - 1e-6))
    assert warmup_cosine(1000, t, w, 1e-7, 5e-4, 1e-6) == pytest.approx(1e-6)


def test_distill_schedule_momentum_and_temperatures():
    cfg = ModelConfig()
    spe, total = 10, 3000
    start = distill_schedule(cfg, 0, spe, total)
    assert (start.momentum, start.teacher_cls_temp, start.teacher_patch_temp) == pytest.approx((0.995, 0.04, 0.05))
    mid_warmup = distill_schedule(cfg, 50, spe, total)  # half of the 10-epoch warm-up
    assert mid_warmup.teacher_cls_temp == pytest.approx(0.055)
    assert mid_warmup.teacher_patch_temp == pytest.approx(0.06)
    half = distill_schedule(cfg, total // 2, spe, total)
    assert half.momentum == pytest.approx(0.9975)
    assert half.teacher_cls_temp == pytest.approx(0.07)
    assert distill_schedule(cfg, total, spe, total).momentum == pytest.approx(1.0)
    assert cosine(5, 0, 0.1, 0.2) == 0.2
