"""The targets' cross-entropy decomposition against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

import model.target_stats as target_stats_module
from model.asymdsd import AsymDSD
from model.losses import masked_target_rows
from model.schedules import DistillSchedule
from model.target_stats import TargetStats, accumulate, decompose, target_stats, teacher_target_stats
from tests.model.conftest import tiny_batch

LN2, LN3 = math.log(2), math.log(3)


def test_collapsed_targets_have_no_entropy_and_all_of_the_cross_entropy_is_kl():
    """Every row the same one-hot prototype: 0 log 0 = 0 exactly, no epsilon."""
    probs = torch.zeros(6, 2, 5)
    probs[..., 3] = 1.0
    stats = target_stats(probs)
    assert stats.rows.item() == 12 and stats.prob_sum.tolist() == [0, 0, 0, 12, 0]
    d = decompose(stats, cross_entropy=2.5)
    assert d.entropy == 0.0 and d.marginal_entropy == 0.0 and d.kl == 2.5


def test_uniform_targets_have_entropy_and_marginal_entropy_ln_k():
    k = 7
    d = decompose(target_stats(torch.full((5, k), 1.0 / k)), cross_entropy=math.log(k))
    assert d.entropy == pytest.approx(math.log(k), rel=1e-7)
    assert d.marginal_entropy == pytest.approx(math.log(k), rel=1e-7)
    assert d.kl == pytest.approx(0.0, abs=1e-6)


def test_three_prototypes_by_hand():
    """Rows (1/2, 1/2, 0) and (1, 0, 0): entropies ln 2 and 0; the mean (3/4, 1/4, 0) has 2 ln 2 - 3/4 ln 3."""
    probs = torch.tensor([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]])
    d = decompose(target_stats(probs), cross_entropy=1.0)
    assert d.entropy == pytest.approx(LN2 / 2, rel=1e-7)
    assert d.marginal_entropy == pytest.approx(2 * LN2 - 0.75 * LN3, rel=1e-7)
    assert d.kl == pytest.approx(1.0 - LN2 / 2, rel=1e-7)


def test_weights_count_rows_that_many_times():
    """The first row twice: entropy 2 ln 2 / 3, mean (2/3, 1/3, 0) with ln 3 - 2/3 ln 2."""
    probs = torch.tensor([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    stats = target_stats(probs, torch.tensor([2.0, 1.0, 0.0]))
    assert stats.rows.item() == 3
    d = decompose(stats, cross_entropy=1.0)
    assert d.entropy == pytest.approx(2 * LN2 / 3, rel=1e-7)
    assert d.marginal_entropy == pytest.approx(LN3 - 2 * LN2 / 3, rel=1e-7)
    repeated = decompose(target_stats(probs[[0, 0, 1]]), cross_entropy=1.0)
    assert (d.entropy, d.marginal_entropy) == pytest.approx((repeated.entropy, repeated.marginal_entropy), rel=1e-12)


def test_micro_batches_add_up_to_the_whole_batch(torch_rng, monkeypatch):
    """Sums over three micro-batches (in chunks of 3 rows) equal the sums over the batch at once."""
    probs = torch.softmax(torch.randn(24, 16, generator=torch_rng) * 3, dim=-1)
    whole = target_stats(probs)
    monkeypatch.setattr(target_stats_module, "CHUNK_ELEMENTS", 3 * 16)
    parts = None
    for part in probs.split(8):
        parts = accumulate(parts, {"cls": target_stats(part)})
    for name in ("entropy_sum", "rows", "prob_sum"):
        assert torch.allclose(getattr(parts["cls"], name), getattr(whole, name), rtol=1e-12, atol=0), name
    assert parts["cls"].prob_sum.dtype == torch.float64
    a, b = decompose(parts["cls"], 3.0), decompose(whole, 3.0)
    assert a.entropy == pytest.approx(b.entropy, rel=1e-12)
    assert a.marginal_entropy == pytest.approx(b.marginal_entropy, rel=1e-12)


def test_marginal_entropy_is_of_the_mean_over_all_parts():
    """Two parts each collapsed onto a different prototype: each has marginal entropy 0, together ln 2."""
    first, second = torch.tensor([[1.0, 0.0]] * 3), torch.tensor([[0.0, 1.0]] * 3)
    assert decompose(target_stats(first), 0.0).marginal_entropy == 0.0
    together = target_stats(first) + target_stats(second)
    assert decompose(together, 0.0).marginal_entropy == pytest.approx(LN2, rel=1e-12)
    unpacked = TargetStats.unpack(together.pack())
    assert unpacked.entropy_sum == together.entropy_sum and unpacked.rows == together.rows
    assert torch.equal(unpacked.prob_sum, together.prob_sum)


def test_teacher_targets_of_the_tiny_model_are_the_rows_the_losses_read(tiny_model_config, torch_rng):
    """CLS: every teacher crop once; patches: each masked position of each masked view, as if gathered."""
    torch.manual_seed(0)
    model = AsymDSD(tiny_model_config)
    views = model.prepare(tiny_batch(4, torch_rng), torch_rng)
    teacher = model.teacher(views, DistillSchedule(0.04, 0.05, 0.99))
    stats = teacher_target_stats(teacher, views.masked_idx)
    assert set(stats) == {"cls", "patch"}
    cfg = tiny_model_config
    assert stats["cls"].rows.item() == 4 * cfg.num_global_crops
    assert stats["patch"].rows.item() == views.masked_idx.numel()

    crops, num_patches, k = teacher.patch_probs.shape
    rows = masked_target_rows(views.masked_idx, cfg.masking.num_masks, num_patches)
    gathered = target_stats(teacher.patch_probs.reshape(-1, k)[rows])
    for name in ("entropy_sum", "rows", "prob_sum"):
        assert torch.allclose(getattr(stats["patch"], name), getattr(gathered, name), rtol=1e-6), name
    out = model.student(views, teacher)
    patch = decompose(stats["patch"], out.terms["patch"].item())
    assert 0 < patch.entropy < math.log(k) and 0 < patch.marginal_entropy <= math.log(k)
    assert patch.kl > 0  # CE - H(t) is the mean KL over exactly the loss's rows
