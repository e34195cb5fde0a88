"""Distillation with Contrast: the loss against one computed by hand, pair by pair, and the teacher it trains."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from model.backbones import build_backbone
from model.config import model_config_from_dict
from model.dwc import DwC, differing_view_cross_entropy
from model.schedules import DistillSchedule
from tests.model.conftest import tiny_batch

SCHEDULE = DistillSchedule(0.04, 0.05, 0.99)


def dwc_config(tiny_model_config, backbone: str = "vit", contrast: float = 0.0):
    data = tiny_model_config.model_dump()
    data.update(method="dwc", backbone=backbone)
    data["loss"]["contrast"] = {"weight": contrast, "temperature": 0.2}
    data["pointnet"] = {"widths": [16, 32, 64]}
    data["dgcnn"] = {"k": 8, "edge_widths": [16, 16, 32], "global_dim": 64}
    return model_config_from_dict(data)


def test_differing_view_cross_entropy_is_the_mean_over_pairs_of_different_views():
    g = torch.Generator().manual_seed(0)
    teacher = torch.softmax(torch.randn(3, 2, 5, generator=g), -1)
    student = torch.log_softmax(torch.randn(3, 6, 5, generator=g), -1)
    terms = [-(teacher[b, i] * student[b, v]).sum() for b in range(3) for i in range(2) for v in range(6) if v != i]
    assert len(terms) == 3 * 10
    assert differing_view_cross_entropy(teacher, student).item() == pytest.approx(sum(terms).item() / 30, rel=1e-6)


def by_hand(model: DwC, batch, contrast_weight: float, temperature: float = 0.2) -> float:
    """The loss recomputed view by view from the modules, with explicit loops over pairs and negatives."""
    cfg = model.cfg
    student, teacher = model.student, model.teacher
    views = model.prepare(batch, torch.Generator().manual_seed(1))
    b = batch.batch_size
    t_emb = teacher.encoder.embedding(teacher.encoder(views.global_inputs)).view(b, 2, -1)
    t_prob = torch.softmax((teacher.cls_head(t_emb) - teacher.cls_center.center) / SCHEDULE.teacher_cls_temp, -1)
    s_emb = torch.cat([student.encoder.embedding(student.encoder(views.global_inputs)).view(b, 2, -1),
                       student.encoder.embedding(student.encoder(views.local_inputs)).view(b, 4, -1)], 1)
    s_logp = torch.log_softmax(student.cls_head(s_emb) / cfg.loss.student_temp, -1)
    ce = [-(t_prob[n, i] * s_logp[n, v]).sum() for n in range(b) for i in range(2) for v in range(6) if v != i]
    total = sum(ce) / len(ce)
    if contrast_weight:
        s, t = F.normalize(s_emb, dim=-1), F.normalize(t_emb, dim=-1)
        nce = []
        for n in range(b):
            for v in range(6):
                for i in range(2):
                    if v == i:
                        continue
                    logits = torch.stack([s[n, v] @ t[m, i] for m in range(b)]) / temperature
                    nce.append(-torch.log_softmax(logits, 0)[n])
        total = total + contrast_weight * sum(nce) / len(nce)
    return total.item()


@pytest.mark.parametrize("backbone", ["vit", "pointnet", "dgcnn"])
@pytest.mark.parametrize("contrast", [0.0, 0.5])
def test_loss_equals_the_hand_computed_one(tiny_model_config, torch_rng, backbone, contrast):
    cfg = dwc_config(tiny_model_config, backbone, contrast)
    torch.manual_seed(0)
    model = DwC(cfg, build_backbone(cfg))
    model.student.eval()
    model.teacher.eval()
    batch = tiny_batch(3, torch_rng)
    with torch.no_grad():
        model.teacher.cls_center.center.normal_()  # a non-zero centre, so centring is checked too
        out = model.student(model.prepare(batch, torch.Generator().manual_seed(1)),
                            model.teacher(model.prepare(batch, torch.Generator().manual_seed(1)), SCHEDULE))
        expected = by_hand(model, batch, contrast)
    assert set(out.terms) == ({"cls", "contrast"} if contrast else {"cls"})
    assert out.total.item() == pytest.approx(expected, rel=1e-5)


def test_teacher_and_student_share_parameter_names_and_start_equal(tiny_model_config):
    cfg = dwc_config(tiny_model_config, "vit", 0.1)
    model = DwC(cfg, build_backbone(cfg))
    student = dict(model.student.named_parameters())
    teacher = dict(model.teacher.named_parameters())
    assert set(teacher) == set(student)
    assert all(torch.equal(teacher[n], student[n]) for n in teacher)
    assert not any(p.requires_grad for p in teacher.values())


def test_training_lowers_the_loss_and_the_ema_follows(tiny_model_config, torch_rng):
    cfg = dwc_config(tiny_model_config, "pointnet", 0.1)
    torch.manual_seed(0)
    model = DwC(cfg, build_backbone(cfg))
    batch = tiny_batch(8, torch_rng)
    opt = torch.optim.AdamW(model.student.parameters(), lr=1e-3)
    before = {n: p.clone() for n, p in model.teacher.named_parameters()}
    losses = []
    for _ in range(15):
        out = model.losses(batch, SCHEDULE, torch.Generator().manual_seed(1))
        out.total.backward()
        opt.step()
        opt.zero_grad()
        model.end_step(0.9)
        losses.append(out.total.item())
    assert losses[-1] < losses[0] - 0.1, losses
    moved = [n for n, p in model.teacher.named_parameters() if not torch.equal(p, before[n])]
    assert len(moved) == len(before)


def test_the_embedding_width_sizes_the_head(tiny_model_config):
    for backbone, width in (("vit", 96), ("pointnet", 64), ("dgcnn", 128)):
        model = DwC(dwc_config(tiny_model_config, backbone), build_backbone(dwc_config(tiny_model_config, backbone)))
        assert model.student.cls_head.mlp[0].in_features == width
        assert math.isclose(model.teacher.cls_center.center.shape[-1], tiny_model_config.head.num_prototypes)
