"""The predictor has no self-attention: masked queries never see each other."""

from __future__ import annotations

import torch

from model.config import PredictorConfig
from model.predictor import Predictor


def setup(seed: int = 0):
    torch.manual_seed(seed)
    pred = Predictor(64, PredictorConfig(dim=32, depth=3, num_heads=2))
    token = torch.randn(1, 1, 64)
    pe = torch.randn(4, 10, 64)
    memory = torch.randn(4, 6, 64)
    return pred, token, pe, memory


def test_changing_one_query_leaves_the_others_unchanged():
    pred, token, pe, memory = setup()
    base = pred(token, pe, memory)
    moved = pe.clone()
    moved[1, 3] += 5.0
    out = pred(token, moved, memory)
    changed = (out - base).abs().amax(-1) > 1e-6
    assert changed[1, 3]
    changed[1, 3] = False
    assert not changed.any()


def test_queries_are_permutation_equivariant_and_set_independent():
    pred, token, pe, memory = setup(1)
    full = pred(token, pe, memory)
    perm = torch.randperm(10)
    assert torch.allclose(pred(token, pe[:, perm], memory), full[:, perm], atol=1e-5)
    # Predicting a subset of the queries gives the same values: nothing depends on the other queries.
    assert torch.allclose(pred(token, pe[:, :4], memory), full[:, :4], atol=1e-5)


def test_memory_is_what_the_queries_read():
    pred, token, pe, memory = setup(2)
    base = pred(token, pe, memory)
    other = memory.clone()
    other[0] += 1.0
    out = pred(token, pe, other)
    assert not torch.allclose(out[0], base[0]) and torch.allclose(out[1:], base[1:])
    assert out.shape == (4, 10, 64)
