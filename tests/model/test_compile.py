"""`train.compile`: the compiled regions compute what eager computes, with no graph breaks."""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.utils import counters

from model.asymdsd import AsymDSD
from model.schedules import DistillSchedule
from tests.model.conftest import tiny_batch

SCHEDULE = DistillSchedule(0.04, 0.05, 0.99)


def step(model: AsymDSD) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """One training forward/backward on a fixed batch and fixed model randomness: loss terms and gradients."""
    batch = tiny_batch(8, torch.Generator().manual_seed(5))
    out = model.losses(batch, SCHEDULE, generator=torch.Generator().manual_seed(1))
    out.total.backward()
    terms = {"total": out.total.item(), **{k: v.item() for k, v in out.terms.items()}}
    return terms, {n: p.grad.clone() for n, p in model.student.named_parameters()}


@pytest.mark.slow
def test_compiled_losses_and_gradients_equal_eager(tiny_model_config):
    torch.manual_seed(0)
    eager = AsymDSD(tiny_model_config)
    compiled = AsymDSD(tiny_model_config)
    compiled.student.load_state_dict(eager.student.state_dict())
    compiled.teacher.load_state_dict(eager.teacher.state_dict())
    counters.clear()
    regions = compiled.compile()
    per_encoder = tiny_model_config.encoder.depth + 2  # blocks, tokenizer, positional MLP
    assert regions == 2 * per_encoder + tiny_model_config.predictor.depth + 2 * 2  # student + teacher, two heads each
    assert list(compiled.student.state_dict()) == list(eager.student.state_dict())  # checkpoints are unchanged

    expected_terms, expected_grads = step(eager)
    got_terms, got_grads = step(compiled)
    assert not counters["graph_break"], dict(counters["graph_break"])  # fullgraph: a break would have raised
    assert counters["stats"]["unique_graphs"] > 0  # the regions really went through dynamo
    for name, value in expected_terms.items():
        assert abs(got_terms[name] - value) <= 1e-5 * max(1.0, abs(value)), (name, got_terms[name], value)
    for name, grad in expected_grads.items():
        scale = grad.abs().max().item()
        assert (got_grads[name] - grad).abs().max().item() <= 1e-5 * max(scale, 1e-3), name
