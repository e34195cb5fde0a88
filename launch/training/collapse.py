"""Collapse signals at every logged step: the targets' cross-entropy decomposition per head, and an alarm.

`target_metrics` sums a step's target statistics (`model.target_stats`) over ranks in one all-reduce and
returns `targets/<head>/entropy`, `targets/<head>/marginal_entropy` and `targets/<head>/kl` for each head
('cls', 'patch') that has targets, the decomposition the official AsymDSD logs
(remcofl/AsymDSD, `asymdsd/callbacks/ce_decomposition_logger.py`).

`CollapseAlarm` (`monitor.collapse`) watches the marginal entropy: when a head's stays below
`min_marginal_fraction * ln K` for `patience` logged steps in a row, every sample is being given nearly the
same prototypes. It fires once per head: one `[pretrain] warning:` line, and the run's `collapse_alarm` tag
lists every alarm so far. Its count is not checkpointed: a resumed launch starts counting afresh.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from launch.training.config import CollapseConfig
from launch.training.distributed import sum_tensor_over_ranks
from model.target_stats import TargetStats, decompose

TAG = "collapse_alarm"
HEADS = ("cls", "patch")


def target_metrics(stats: dict[str, TargetStats], losses: dict[str, float]) -> dict[str, float]:
    """The decomposition of each head's targets over the global batch; `losses` holds its `loss/<head>`.

    A collective: every rank calls it with its own sums.
    """
    heads = sorted(stats)
    total = sum_tensor_over_ranks(torch.cat([stats[h].pack() for h in heads]))
    metrics: dict[str, float] = {}
    for head, packed in zip(heads, total.split([stats[h].prob_sum.numel() + 2 for h in heads])):
        d = decompose(TargetStats.unpack(packed), losses[f"loss/{head}"])
        metrics.update({f"targets/{head}/entropy": d.entropy, f"targets/{head}/marginal_entropy": d.marginal_entropy,
                        f"targets/{head}/kl": d.kl})
    return metrics


@dataclass(frozen=True)
class Alarm:
    head: str
    marginal_entropy: float
    fraction: float
    num_prototypes: int
    since: int  # first logged step of the run under the floor
    step: int  # the step it fired at

    @property
    def floor(self) -> float:
        return self.fraction * math.log(self.num_prototypes)

    def summary(self) -> str:
        return (f"{self.head}: marginal entropy {self.marginal_entropy:.3g} < {self.fraction:g} ln K = "
                f"{self.floor:.3g} since step {self.since}")

    def message(self) -> str:
        return (f"{self.head} targets look collapsed at step {self.step}: marginal entropy "
                f"{self.marginal_entropy:.3g} < {self.fraction:g} ln K = {self.floor:.3g} (K = {self.num_prototypes}, "
                f"ln K = {math.log(self.num_prototypes):.3g}) at every logged step since step {self.since}, so nearly "
                f"every sample gets the same prototypes; check the centering momentum (model.loss.center_momentum), "
                f"the teacher temperature (model.loss.teacher_{self.head}_temp) and the learning rate (optim.lr)")


@dataclass
class CollapseAlarm:
    """`update(step, metrics)` at each logged step returns the alarms that fire there (each head at most once)."""

    cfg: CollapseConfig
    num_prototypes: int
    fired: list[Alarm] = field(default_factory=list, init=False)
    under: dict[str, list[int]] = field(default_factory=dict, init=False)  # per head: logged steps under the floor, in a row

    def update(self, step: int, metrics: dict[str, float]) -> list[Alarm]:
        floor = self.cfg.min_marginal_fraction * math.log(self.num_prototypes)
        done = {a.head for a in self.fired}
        new: list[Alarm] = []
        for head in HEADS:
            value = metrics.get(f"targets/{head}/marginal_entropy")
            if value is None or head in done:  # no such head, or not observed at this step
                continue
            under = self.under.setdefault(head, [])
            if not value < floor:  # NaN (a skipped step) ends a run too
                under.clear()
                continue
            under.append(step)
            if len(under) >= self.cfg.patience:
                new.append(Alarm(head, value, self.cfg.min_marginal_fraction, self.num_prototypes, under[0], step))
        self.fired += new
        return new

    def tags(self) -> dict[str, str]:
        """The run's tag: every alarm so far, one `head: ...` summary each."""
        return {TAG: "; ".join(a.summary() for a in self.fired)}
