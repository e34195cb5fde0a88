"""The logged target decomposition and the collapse alarm (`monitor.collapse`)."""

from __future__ import annotations

import math

import pytest
import torch

from launch.training.collapse import TAG, CollapseAlarm, target_metrics
from launch.training.config import CollapseConfig
from model.target_stats import target_stats

K = 8
LN_K = math.log(K)


def collapsed(rows: int = 8) -> torch.Tensor:
    probs = torch.zeros(rows, K)
    probs[:, 2] = 1.0
    return probs


def distinct() -> torch.Tensor:
    """One-hot targets, a different prototype per sample: confident and healthy (marginal entropy ln K)."""
    return torch.eye(K)


def uniform() -> torch.Tensor:
    return torch.full((4, K), 1.0 / K)


def metrics_of(cls: torch.Tensor, patch: torch.Tensor | None = None) -> dict[str, float]:
    stats = {"cls": target_stats(cls)} | ({} if patch is None else {"patch": target_stats(patch)})
    return target_metrics(stats, {"loss/cls": 3.0, "loss/patch": 4.0, "loss/total": 3.5})


def test_metrics_per_head_from_hand_computed_targets():
    metrics = metrics_of(collapsed(), uniform())
    assert set(metrics) == {f"targets/{h}/{m}" for h in ("cls", "patch") for m in ("entropy", "marginal_entropy", "kl")}
    assert metrics["targets/cls/entropy"] == 0.0 and metrics["targets/cls/marginal_entropy"] == 0.0
    assert metrics["targets/cls/kl"] == 3.0
    assert metrics["targets/patch/entropy"] == pytest.approx(LN_K, rel=1e-7)
    assert metrics["targets/patch/marginal_entropy"] == pytest.approx(LN_K, rel=1e-7)
    assert metrics["targets/patch/kl"] == pytest.approx(4.0 - LN_K, rel=1e-7)
    assert set(metrics_of(distinct())) == {"targets/cls/entropy", "targets/cls/marginal_entropy", "targets/cls/kl"}


def alarm(patience: int = 3) -> CollapseAlarm:
    return CollapseAlarm(CollapseConfig(min_marginal_fraction=0.1, patience=patience), num_prototypes=K)


def test_collapsed_targets_fire_once_after_patience_logged_steps():
    watch = alarm()
    fired = {step: watch.update(step, metrics_of(collapsed())) for step in (10, 20, 30, 40, 50)}
    assert [s for s, alarms in fired.items() if alarms] == [30]
    (first,) = fired[30]
    assert (first.head, first.since, first.step, first.marginal_entropy) == ("cls", 10, 30, 0.0)
    assert first.floor == pytest.approx(0.1 * LN_K)
    message = first.message()
    for part in ("cls targets look collapsed at step 30", "marginal entropy 0 < 0.1 ln K = 0.208", "K = 8",
                 "ln K = 2.08", "since step 10", "model.loss.center_momentum", "model.loss.teacher_cls_temp",
                 "optim.lr"):
        assert part in message, (part, message)
    assert watch.tags() == {TAG: "cls: marginal entropy 0 < 0.1 ln K = 0.208 since step 10"}


@pytest.mark.parametrize("healthy", [distinct, uniform])
def test_healthy_targets_never_fire(healthy):
    watch = alarm(patience=1)
    assert not any(watch.update(step, metrics_of(healthy(), healthy())) for step in range(1, 20))
    assert watch.tags() == {TAG: ""}


def test_a_healthy_or_non_finite_step_restarts_the_count():
    watch = alarm()
    nan = {"targets/cls/marginal_entropy": math.nan}
    steps = [collapsed(), collapsed(), distinct(), collapsed(), collapsed(), nan, collapsed(), collapsed()]
    fired = [watch.update(step, m if isinstance(m, dict) else metrics_of(m)) for step, m in enumerate(steps, 1)]
    assert not any(fired)
    (late,) = watch.update(9, metrics_of(collapsed()))
    assert late.since == 7


def test_steps_without_target_metrics_neither_count_nor_restart():
    """A step logged without observation (one that stops the job) leaves the count where it was."""
    watch = alarm()
    assert not watch.update(1, metrics_of(collapsed())) and not watch.update(2, {"loss/total": 1.0})
    assert not watch.update(3, metrics_of(collapsed()))
    (fired,) = watch.update(4, metrics_of(collapsed()))
    assert fired.since == 1


def test_each_head_fires_on_its_own_and_the_tag_names_both():
    watch = alarm(patience=2)
    assert not watch.update(1, metrics_of(collapsed(), distinct()))
    assert [a.head for a in watch.update(2, metrics_of(collapsed(), collapsed()))] == ["cls"]
    assert [a.head for a in watch.update(3, metrics_of(collapsed(), collapsed()))] == ["patch"]
    assert not watch.update(4, metrics_of(collapsed(), collapsed()))
    assert watch.tags() == {TAG: "cls: marginal entropy 0 < 0.1 ln K = 0.208 since step 1; "
                                 "patch: marginal entropy 0 < 0.1 ln K = 0.208 since step 2"}
    assert "model.loss.teacher_patch_temp" in watch.fired[1].message()
