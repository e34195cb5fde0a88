"""Each loss term on a small hand-computed example, and the reference's CLS pairings."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from model.losses import (
    contrastive_loss,
    koleo_loss,
    pairwise_cross_entropy,
    patch_loss,
    regression_loss,
)


def H(t: torch.Tensor, logp: torch.Tensor) -> float:
    return float(-(t * logp).sum().detach())


def test_pairwise_cross_entropy_hand_example():
    teacher = torch.tensor([[[0.5, 0.5], [1.0, 0.0]]])  # B=1, I=2
    student = torch.log(torch.tensor([[[0.25, 0.75]]]))  # J=1
    expected = (0.5 * -math.log(0.25) + 0.5 * -math.log(0.75) - math.log(0.25)) / 2
    assert pairwise_cross_entropy(teacher, student).item() == pytest.approx(expected, rel=1e-6)


def test_pairwise_cross_entropy_is_mean_over_all_pairs_with_diagonal():
    torch.manual_seed(0)
    t = torch.softmax(torch.randn(3, 2, 5), -1)
    s = torch.log_softmax(torch.randn(3, 8, 5), -1)
    loops = sum(H(t[b, i], s[b, j]) for b in range(3) for i in range(2) for j in range(8)) / 48
    assert pairwise_cross_entropy(t, s).item() == pytest.approx(loops, rel=1e-5)


def test_patch_loss_hand_example_and_chunking():
    # Identity head: the predictions are the logits. Two masked views of one crop (M = 2), Q = 1.
    predictions = torch.tensor([[[0.0, 0.0]], [[math.log(3.0), 0.0]]], requires_grad=True)
    targets = torch.tensor([[[1.0, 0.0], [0.2, 0.8]]])  # (crops=1, P=2, K=2)
    masked_idx = torch.tensor([[1], [0]])
    loss = patch_loss(nn.Identity(), predictions, targets, masked_idx, 2, student_temp=1.0, chunk_rows=0)
    # view 0 predicts patch 1 with p = (1/2, 1/2); view 1 predicts patch 0 with p = (3/4, 1/4)
    expected = ((-0.2 * math.log(0.5) - 0.8 * math.log(0.5)) + -math.log(0.75)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_chunked_patch_loss_equals_unchunked_with_gradients():
    torch.manual_seed(0)
    head = nn.Linear(8, 16)
    pred = torch.randn(6, 5, 8, requires_grad=True)
    targets = torch.softmax(torch.randn(3, 10, 16), -1)
    masked_idx = torch.stack([torch.randperm(10)[:5] for _ in range(6)])
    whole = patch_loss(head, pred, targets, masked_idx, 2, 0.1, chunk_rows=0)
    (g_whole,) = torch.autograd.grad(whole, pred)
    chunked = patch_loss(head, pred, targets, masked_idx, 2, 0.1, chunk_rows=7)
    (g_chunked,) = torch.autograd.grad(chunked, pred)
    assert chunked.item() == pytest.approx(whole.item(), rel=1e-6)
    assert torch.allclose(g_whole, g_chunked, atol=1e-6)
    loops = sum(
        H(targets[r // 2, masked_idx[r, q]], torch.log_softmax(head(pred[r, q]) / 0.1, -1))
        for r in range(6) for q in range(5)
    ) / 30
    assert whole.item() == pytest.approx(loops, rel=1e-5)


def test_koleo_hand_example():
    c, s = math.cos(math.pi / 6), math.sin(math.pi / 6)
    z = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]], [[c, s]]])  # (B=3, slots=1, D=2)
    # nearest neighbours by cosine: 0 -> 2, 1 -> 2, 2 -> 0
    d02 = math.dist((1.0, 0.0), (c, s))
    d12 = math.dist((0.0, 1.0), (c, s))
    expected = -(2 * math.log(d02 + 1e-6) + math.log(d12 + 1e-6)) / 3
    assert koleo_loss(z).item() == pytest.approx(expected, rel=1e-5)


def test_koleo_is_per_slot():
    torch.manual_seed(0)
    z = torch.randn(6, 3, 4)
    per_slot = torch.stack([koleo_loss(z[:, i : i + 1]) for i in range(3)]).mean()
    assert koleo_loss(z).item() == pytest.approx(per_slot.item(), rel=1e-6)


def test_huber_regression_hand_example():
    pred = torch.zeros(1, 2, 1)  # R=1, Q=2, D=1
    feats = torch.tensor([[[1.0], [3.0], [9.0]]])  # crops=1, P=3
    masked_idx = torch.tensor([[0, 1]])
    # beta = 2: |d| = 1 < 2 -> 0.5 d^2 / beta = 0.25; |d| = 3 -> |d| - beta / 2 = 2
    assert regression_loss(pred, feats, masked_idx, 1, beta=2.0).item() == pytest.approx((0.25 + 2.0) / 2)


def test_contrastive_loss_matches_explicit_infonce():
    torch.manual_seed(0)
    b, v, cg, d, tau = 4, 3, 2, 8, 0.2
    student, teacher = torch.randn(b, v, d), torch.randn(b, cg, d)
    view_crop = torch.tensor([0, 1, -1])
    sn, tn = torch.nn.functional.normalize(student, dim=-1), torch.nn.functional.normalize(teacher, dim=-1)
    terms = []
    for i in range(b):
        for j in range(v):
            for c in range(cg):
                if view_crop[j] == c:
                    continue  # never the same crop
                logits = torch.stack([sn[i, j] @ tn[n, c] for n in range(b)]) / tau
                terms.append(-torch.log_softmax(logits, 0)[i])
    expected = torch.stack(terms).mean()
    assert contrastive_loss(student, view_crop, teacher, tau).item() == pytest.approx(expected.item(), rel=1e-5)
