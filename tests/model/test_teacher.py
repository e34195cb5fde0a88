"""EMA teacher: fp32, never trained, updated by the EMA formula; centering."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from model.asymdsd import AsymDSD
from model.centering import Centering
from model.schedules import DistillSchedule
from tests.model.conftest import tiny_batch

SCHEDULE = DistillSchedule(0.04, 0.05, 0.99)


def test_teacher_receives_no_gradient(tiny_model_config, torch_rng):
    model = AsymDSD(tiny_model_config)
    out = model.losses(tiny_batch(4, torch_rng), SCHEDULE, generator=torch_rng)
    out.total.backward()
    assert all(not p.requires_grad and p.grad is None for p in model.teacher.parameters())
    grads = {n: p.grad for n, p in model.student.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values()), [n for n, g in grads.items() if g is None]


def test_teacher_starts_as_an_exact_copy(tiny_model_config):
    model = AsymDSD(tiny_model_config)
    student = dict(model.student.named_parameters())
    for name, p in model.teacher.named_parameters():
        assert torch.equal(p, student[name]), name


def test_ema_update_formula_and_fp32(tiny_model_config):
    model = AsymDSD(tiny_model_config)
    with torch.no_grad():
        for p in model.student.parameters():
            p.add_(torch.randn_like(p))
    before = {n: p.clone() for n, p in model.teacher.named_parameters()}
    student = dict(model.student.named_parameters())
    model.update_teacher(0.9)
    for name, p in model.teacher.named_parameters():
        assert p.dtype == torch.float32
        assert torch.equal(p, torch.lerp(before[name], student[name], 0.1)), name
    snapshot = [p.clone() for p in model.teacher.parameters()]
    model.update_teacher(1.0)  # m >= 1 is a no-op
    assert all(torch.equal(p, q) for p, q in zip(model.teacher.parameters(), snapshot))


def test_ema_refuses_a_low_precision_student(tiny_model_config):
    """A bf16 copy moves in rounding steps at late-training learning rates: the EMA must never read one."""
    model = AsymDSD(tiny_model_config)
    model.student.to(torch.bfloat16)
    snapshot = [p.clone() for p in model.teacher.parameters()]
    with pytest.raises(TypeError, match="fp32 student weights"):
        model.update_teacher(0.9)
    assert all(torch.equal(p, q) for p, q in zip(model.teacher.parameters(), snapshot))


def test_centering_uses_the_old_center_then_updates_on_commit():
    center = Centering(3, momentum=0.9)
    a = torch.tensor([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])
    assert torch.equal(center(a), a)  # centre starts at 0
    assert torch.equal(center.center, torch.zeros(3))  # nothing moves before the optimizer step commits
    center.commit()
    assert torch.allclose(center.center, 0.1 * a.mean(0))
    b = torch.ones(4, 3)
    assert torch.allclose(center(b), b - 0.1 * a.mean(0))
    center.commit()
    assert torch.allclose(center.center, 0.9 * 0.1 * a.mean(0) + 0.1 * b.mean(0))


def test_centering_over_micro_batches_equals_one_batch():
    """Gradient accumulation: two micro-batches then one commit == the whole batch at once."""
    rows = torch.randn(6, 5)
    split, whole = Centering(5, momentum=0.8), Centering(5, momentum=0.8)
    whole.center.fill_(0.3)
    split.center.fill_(0.3)
    first, second = split(rows[:4]), split(rows[4:])
    assert torch.equal(torch.cat([first, second]), whole(rows))  # both micro-batches see the old centre
    split.commit()
    whole.commit()
    assert torch.allclose(split.center, whole.center)


def test_discarded_step_leaves_the_center_alone():
    center = Centering(2, momentum=0.5)
    center(torch.tensor([[float("nan"), 1.0]]))
    center.discard()
    center.commit()  # nothing pending
    assert torch.equal(center.center, torch.zeros(2))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _distributed_worker(rank: int, port: int, results: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        from model.losses import contrastive_loss

        center = Centering(2, momentum=0.5)
        center(torch.full((3, 2), float(rank + 1)))  # rank means 1 and 2 -> global mean 1.5
        center.commit()
        torch.manual_seed(0)
        student, teacher = torch.randn(4, 2, 8), torch.randn(4, 2, 8)
        rows = slice(rank * 2, rank * 2 + 2)
        loss = contrastive_loss(student[rows], torch.tensor([0, -1]), teacher[rows], 0.2)
        results[rank] = (center.center.tolist(), loss.item())
    finally:
        dist.destroy_process_group()


def test_centering_and_contrast_across_ranks():
    """Two gloo processes: identical centres on both ranks; negatives come from every rank."""
    from model.losses import contrastive_loss

    results = mp.Manager().dict()
    mp.spawn(_distributed_worker, args=(_free_port(), results), nprocs=2, join=True)
    assert results[0][0] == pytest.approx([0.75, 0.75]) and results[1][0] == results[0][0]
    torch.manual_seed(0)
    student, teacher = torch.randn(4, 2, 8), torch.randn(4, 2, 8)
    whole = contrastive_loss(student, torch.tensor([0, -1]), teacher, 0.2).item()
    assert (results[0][1] + results[1][1]) / 2 == pytest.approx(whole, rel=1e-5)
