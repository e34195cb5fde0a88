"""Whole-model behaviour: the training modes, the CLS pairings, the loss weighting, learning."""

from __future__ import annotations

import copy

import pytest
import torch

from configuration import ConfigError
from model.asymdsd import AsymDSD
from model.batch import CropBatch, MultiCropBatch
from model.config import model_config_from_dict
from model.schedules import DistillSchedule
from tests.model.conftest import random_crops, tiny_batch

SCHEDULE = DistillSchedule(0.04, 0.05, 0.99)


def with_overrides(cfg, **sections):
    data = cfg.model_dump()
    for key, value in sections.items():
        if isinstance(value, dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return model_config_from_dict(data)


def test_tiny_loss_falls_on_a_fixed_batch(tiny_model_config, torch_rng):
    """The student fits fixed teacher targets: every branch learns through the shared parameters."""
    torch.manual_seed(0)
    model = AsymDSD(tiny_model_config)
    views = model.prepare(tiny_batch(8, torch_rng), torch_rng)
    targets = model.teacher(views, SCHEDULE)
    opt = torch.optim.AdamW(model.student.parameters(), lr=1e-3, weight_decay=0.05)
    losses = []
    for _ in range(20):
        out = model.student(views, targets)
        out.total.backward()
        opt.step()
        opt.zero_grad()
        losses.append(out.total.item())
    assert losses[-1] < 0.9 * losses[0], losses
    assert all(b <= a + 0.02 for a, b in zip(losses[5:], losses[6:])), losses


def test_total_is_weighted_mean_of_terms(tiny_model_config, torch_rng):
    model = AsymDSD(tiny_model_config)
    out = model.losses(tiny_batch(4, torch_rng), SCHEDULE, generator=torch_rng)
    assert set(out.terms) == {"cls", "patch", "koleo"}
    expected = (out.terms["patch"] + out.terms["cls"] + 0.01 * out.terms["koleo"]) / 2.01
    assert out.total.item() == pytest.approx(expected.item(), rel=1e-6)


def test_cls_mask_pairings(tiny_model_config):
    """Unmasked crop 0 vs teacher crop 1 only; 8 masked views and 4 locals vs both teacher crops."""
    model = AsymDSD(tiny_model_config)
    torch.manual_seed(0)
    t = torch.softmax(torch.randn(3, 2, 6), -1)
    s = torch.log_softmax(torch.randn(3, 1 + 8 + 4, 6), -1)

    def h(i, j):  # mean over samples of H(T_i, S_j)
        return (-(t[:, i] * s[:, j]).sum(-1)).mean()

    unm = h(1, 0)
    msk = sum(h(i, j) for i in range(2) for j in range(1, 9)) / 16
    loc = sum(h(i, j) for i in range(2) for j in range(9, 13)) / 8
    got = model.student._cls_loss(t, s, num_local=4)
    assert got.item() == pytest.approx(((unm + msk + loc) / 3).item(), rel=1e-6)


@pytest.mark.parametrize("mode", ["cls", "mask"])
def test_ablation_modes_train(tiny_model_config, torch_rng, mode):
    if mode == "mask":  # AsymSD-MPM: one crop, no CLS token, no local crops
        cfg = with_overrides(tiny_model_config, mode=mode, num_global_crops=1, num_local_crops=0, encoder={"cls_token": False})
        batch = MultiCropBatch(random_crops(4, 1, 512, torch_rng))
        expected_terms = {"patch", "regression"}
    else:  # AsymSD-CLS: no masking, no predictor
        cfg = with_overrides(tiny_model_config, mode=mode)
        batch = tiny_batch(4, torch_rng)
        expected_terms = {"cls", "koleo"}
    model = AsymDSD(cfg)
    assert hasattr(model.student, "cls_head") == (mode == "cls")
    assert hasattr(model.student, "predictor") == (mode == "mask")
    out = model.losses(batch, SCHEDULE, generator=torch_rng)
    assert set(out.terms) == expected_terms
    out.total.backward()
    assert all(p.grad is not None for p in model.student.parameters())


def test_contrast_term_is_optional_and_weighted(tiny_model_config, torch_rng):
    cfg = with_overrides(tiny_model_config, loss={"contrast": {"weight": 0.5, "temperature": 0.2}})
    out = AsymDSD(cfg).losses(tiny_batch(4, torch_rng), SCHEDULE, generator=torch_rng)
    t = out.terms
    assert set(t) == {"cls", "patch", "koleo", "contrast"}
    expected = (t["patch"] + t["cls"] + 0.01 * t["koleo"] + 0.5 * t["contrast"]) / 2.51
    assert out.total.item() == pytest.approx(expected.item(), rel=1e-6)


def test_precomputed_indices_give_the_same_loss(tiny_model_config, torch_rng):
    """A loader may compute FPS/kNN itself: with the same indices and masks the losses are identical."""
    model = AsymDSD(tiny_model_config)
    other = copy.deepcopy(model)
    batch = tiny_batch(3, torch_rng)
    views = model.prepare(batch, torch_rng)  # FPS + kNN inside the model

    def loader_side(crops: CropBatch, patches) -> CropBatch:
        b, c = crops.num_points.shape
        p, k = patches.patch_idx.shape[1:]
        return CropBatch(
            crops.points, crops.num_points, patches.center_idx.view(b, c, p), patches.patch_idx.view(b, c, p, k)
        )

    pre = MultiCropBatch(
        loader_side(batch.global_crops, views.global_patches), loader_side(batch.local_crops, views.local_patches)
    )
    pre_views = other.prepare(pre, torch_rng)
    pre_views.visible_idx, pre_views.masked_idx = views.visible_idx, views.masked_idx
    a = model.student(views, model.teacher(views, SCHEDULE))
    b = other.student(pre_views, other.teacher(pre_views, SCHEDULE))
    assert torch.equal(views.global_patches.neighborhoods, pre_views.global_patches.neighborhoods)
    assert a.total.item() == pytest.approx(b.total.item(), rel=1e-6)


def test_bf16_autocast_step_is_finite(tiny_model_config, torch_rng):
    model = AsymDSD(tiny_model_config)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model.losses(tiny_batch(4, torch_rng), SCHEDULE, generator=torch_rng)
    out.total.backward()
    assert torch.isfinite(out.total)
    assert all(torch.isfinite(p.grad).all() for p in model.student.parameters())


def test_crop_count_mismatch_is_a_clear_error(tiny_model_config, torch_rng):
    batch = MultiCropBatch(random_crops(2, 3, 512, torch_rng), random_crops(2, 4, 128, torch_rng))
    with pytest.raises(ValueError, match="3 global crops, config says 2"):
        AsymDSD(tiny_model_config).prepare(batch)


def test_inconsistent_mode_config_names_the_key(tiny_model_config):
    with pytest.raises(ConfigError, match="cls_token"):
        with_overrides(tiny_model_config, mode="mask")
    with pytest.raises(ConfigError, match="encoder.num_heads"):
        model_config_from_dict({"encoder": {"num_heads": "six"}})
