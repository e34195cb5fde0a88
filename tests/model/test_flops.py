"""model/flops.py against torch's FlopCounterMode on whole training steps.

A step is `prepare`, the teacher forward and the student forward and backward. Checkpointing is off
in the comparisons (its recompute is not model FLOPs; `test_recompute_is_not_counted` shows that).
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils.flop_counter import FlopCounterMode, baddbmm_flop, sdpa_backward_flop_count, sdpa_flop_count

from model.asymdsd import AsymDSD
from model.backbones import build_backbone
from model.batch import MultiCropBatch
from model.config import ModelConfig, load_model_config
from model.dwc import DwC
from model.flops import training_flops
from model.schedules import DistillSchedule
from model.summary import training_gflops_per_shape
from tests.conftest import ROOT
from tests.model.conftest import random_crops, tiny_batch
from tests.model.test_training import with_overrides

SCHEDULE = DistillSchedule(0.04, 0.05, 0.99)
aten = torch.ops.aten

# torch's registry has no entry for the CPU flash-attention kernel (the counter would see 0 FLOPs);
# count it with the formulas torch applies to the CUDA flash / memory-efficient kernels. Nor for in-place
# baddbmm_ (DGCNN's k-NN distances): the out-of-place formula.
CPU_ATTENTION = {
    aten.baddbmm_: lambda self, a, b, *_, **__: baddbmm_flop(self, a, b),
    aten._scaled_dot_product_flash_attention_for_cpu: lambda q, k, v, *_, **__: sdpa_flop_count(q, k, v),
    aten._scaled_dot_product_flash_attention_for_cpu_backward: (
        lambda grad, q, k, v, *_, **__: sdpa_backward_flop_count(grad, q, k, v)
    ),
}
NO_CHECKPOINT = {
    "loss": {"patch_loss_chunk": 0},
    "tokenizer": {"checkpoint": False},
    "encoder": {"checkpoint_blocks": False},
}


def config(name: str, **sections) -> ModelConfig:
    """configs/model/<name>.yaml without checkpointing, then `sections` (dict sections merge)."""
    merged = {**NO_CHECKPOINT}
    for key, value in sections.items():
        merged[key] = {**merged.get(key, {}), **value} if isinstance(value, dict) else value
    return with_overrides(load_model_config(ROOT / f"configs/model/{name}.yaml"), **merged)


def counted_step(
    model: AsymDSD, batch: MultiCropBatch, torch_rng: torch.Generator, fake: FakeTensorMode | None = None
) -> int:
    """FlopCounterMode's count of one step; with `fake`, teacher and student run on shape-only tensors."""
    views = model.prepare(batch, torch_rng)
    counter = FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION)
    with fake or contextlib.nullcontext(), counter:
        model.student(views, model.teacher(views, SCHEDULE)).total.backward()
    return counter.get_total_flops()


def fake_model(cfg: ModelConfig) -> tuple[AsymDSD, FakeTensorMode]:
    """The model with fake CPU weights: built on the meta device, then given fake storage (no memory)."""
    fake = FakeTensorMode(allow_non_fake_inputs=True)
    with torch.device("meta"):
        model = AsymDSD(cfg)
    with fake:
        model.student.to_empty(device="cpu")
        model.teacher.to_empty(device="cpu")
    return model, fake


def real_step(cfg: ModelConfig, batch: MultiCropBatch, torch_rng: torch.Generator) -> int:
    torch.manual_seed(0)
    return counted_step(AsymDSD(cfg), batch, torch_rng)


def full_size_batch(batch: int, torch_rng: torch.Generator) -> MultiCropBatch:
    """S/B/L crops with fewer points: the FLOPs depend on the patch counts only, not on the crop sizes."""
    return MultiCropBatch(random_crops(batch, 2, 128, torch_rng), random_crops(batch, 4, 64, torch_rng))


TINY_CASES = {
    "cls_mask": {},
    "cls": {"mode": "cls"},
    "contrast": {"loss": {"contrast": {"weight": 0.5, "temperature": 0.2}}},
    "cls_contrast": {"mode": "cls", "loss": {"contrast": {"weight": 0.5, "temperature": 0.2}}},
    "efficient_drop_path": {"encoder": {"drop_path": 0.2}},  # teacher and student run round(0.8 B') rows
    "bernoulli_drop_path": {"encoder": {"drop_path": 0.05}},  # every row runs the branch
    "linear_drop_path_student_only": {
        "encoder": {"drop_path": 0.4, "drop_path_schedule": "linear"}, "teacher": {"drop_path": False}
    },
}


@pytest.mark.parametrize("case", TINY_CASES)
def test_tiny_matches_flop_counter(torch_rng, case):
    cfg = config("tiny", **TINY_CASES[case])
    batch = tiny_batch(3, torch_rng)
    assert real_step(cfg, batch, torch_rng) == training_flops(cfg, 3).total


def test_tiny_mask_mode_matches_flop_counter(torch_rng):
    cfg = config("tiny", mode="mask", num_global_crops=1, num_local_crops=0, encoder={"cls_token": False})
    batch = MultiCropBatch(random_crops(3, 1, 512, torch_rng))
    assert real_step(cfg, batch, torch_rng) == training_flops(cfg, 3).total


def test_s_matches_flop_counter(torch_rng):
    """One shape (KoLeo needs two, so it is off: B and L cover it)."""
    cfg = config("asymdsd_s")
    assert real_step(cfg, full_size_batch(1, torch_rng), torch_rng) == training_flops(cfg, 1).total


def test_fake_tensor_count_equals_real_count(torch_rng):
    """Fake tensors take the same kernels and shapes as a real step, so they count the same FLOPs."""
    cfg = config("tiny", encoder={"drop_path": 0.2})
    batch = tiny_batch(3, torch_rng)
    model, fake = fake_model(cfg)
    assert counted_step(model, batch, torch_rng, fake) == real_step(cfg, batch, torch_rng)


@pytest.mark.parametrize("name", ["asymdsd_b", "asymdsd_l"])
def test_b_and_l_match_flop_counter_on_fake_tensors(torch_rng, name):
    """B and L (drop path 0.2 / 0.4, teacher too) on fake tensors: a real CPU step of B alone takes ~30 s."""
    cfg = config(name)
    model, fake = fake_model(cfg)
    assert counted_step(model, full_size_batch(2, torch_rng), torch_rng, fake) == training_flops(cfg, 2).total


def test_recompute_is_not_counted(torch_rng):
    """Checkpointing re-runs forwards in the backward; the analytic count (model FLOPs) leaves them out."""
    plain = config("tiny")
    checkpointed = with_overrides(
        plain, loss={"patch_loss_chunk": 64}, tokenizer={"checkpoint": True},
        encoder={"checkpoint_blocks": True},
    )
    batch = tiny_batch(2, torch_rng)
    assert training_flops(checkpointed, 2) == training_flops(plain, 2)
    measured = real_step(plain, batch, torch_rng)
    assert measured == training_flops(plain, 2).total
    assert real_step(checkpointed, batch, torch_rng) > measured


def test_breakdown_sums_to_total_and_summary_reports_it_per_shape():
    cfg = config("asymdsd_s")
    flops = training_flops(cfg, 128)
    assert flops.total == sum(flops.components().values())
    assert flops.per_shape == flops.total / 128
    assert all(value > 0 for value in flops.components().values())
    gflops = training_gflops_per_shape(cfg)
    assert gflops.pop("total") == pytest.approx(flops.per_shape / 1e9)
    assert sum(gflops.values()) == pytest.approx(flops.per_shape / 1e9)


DWC_CASES = {
    "vit": {},
    "vit_contrast": {"loss": {"contrast": {"weight": 0.5, "temperature": 0.2}}},
    "pointnet": {"backbone": "pointnet", "pointnet": {"widths": [16, 32, 64]}},
    "dgcnn_contrast": {"backbone": "dgcnn", "dgcnn": {"k": 8, "edge_widths": [16, 16, 32], "global_dim": 64},
                       "loss": {"contrast": {"weight": 0.5, "temperature": 0.2}}},
}


@pytest.mark.parametrize("case", DWC_CASES)
def test_dwc_matches_flop_counter(torch_rng, case):
    """Distillation with Contrast with each backbone; point networks on the tiny batch's 512 / 128-point crops."""
    cfg = config("tiny", method="dwc", **DWC_CASES[case])
    torch.manual_seed(0)
    model = DwC(cfg, build_backbone(cfg))
    assert counted_step(model, tiny_batch(3, torch_rng), torch_rng) == training_flops(cfg, 3, (512, 128)).total
