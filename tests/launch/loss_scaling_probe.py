"""Drives the real trainer through an overflowed loss-scaled step, then a clean one; prints JSON facts.

Run in its own process (it creates a process group): `python loss_scaling_probe.py SHARDS OUT STAGE`.
fp16 autocast does not run on CPU, so the loss scaling runs under fp32 here: a scale of 2**127 makes the
scaled loss (> 2) overflow exactly as an fp16 step overflows, and a power-of-two scale that does not
overflow must give bit-identical weights to an unscaled step.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from launch.config import load_pretrain_config  # noqa: E402
from launch.distributed import init_distributed  # noqa: E402
from launch.precision import DynamicLossScale, LossScaling  # noqa: E402
from launch.trainer import Pretrainer  # noqa: E402
from pipeline.loader import make_loader  # noqa: E402
from tests.launch.conftest import DEMO, small_run  # noqa: E402


def snapshot(trainer: Pretrainer) -> dict[str, torch.Tensor]:
    student = {f"student.{n}": p.detach().clone() for n, p in trainer.engine.module.named_parameters()}
    return {**student, **{f"teacher.{n}": t.clone() for n, t in trainer.model.teacher.state_dict().items()}}


def unchanged(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def main(shards: str, out: str, stage: str) -> None:
    def trainer(name: str) -> Pretrainer:
        cfg = load_pretrain_config(DEMO, small_run(Path(shards), Path(out) / name, "mlflow.enabled=false",
                                                   f"deepspeed.zero_optimization.stage={stage}"))
        return Pretrainer(cfg, env)

    env = init_distributed("cpu")
    scaled, plain = trainer("scaled"), trainer("plain")
    loader, _ = make_loader(scaled.loader_cfg, scaled.manifests, 0, scaled.cfg.train.global_batch, 0, 1, 0, None)
    batch = next(iter(loader))
    values = scaled.schedule.at(3)  # past the first warm-up steps: a visible update

    scaled.loss_scaling = LossScaling(scaled.engine, DynamicLossScale(scale=2.0**127))
    before = snapshot(scaled)
    overflowed = scaled._optimizer_step(batch, 0, values)
    facts = {
        "overflow_applied": overflowed.applied,
        "overflow_left_everything": unchanged(before, snapshot(scaled)),
        "optimizer_state_after_overflow": sum(len(s) for s in scaled.optimizer.state.values()),
        "nonfinite_total": scaled.nonfinite_total,
        "scale_after_overflow": scaled.loss_scaling.scale.scale,
    }
    scaled.loss_scaling.scale.scale = 2.0**10
    clean = scaled._optimizer_step(batch, 0, values)
    reference = plain._optimizer_step(batch, 0, values)
    after, expected = snapshot(scaled), snapshot(plain)
    facts.update({
        "clean_applied": clean.applied,
        "scale_after_clean": scaled.loss_scaling.scale.scale,
        "clean_steps": scaled.loss_scaling.scale.clean_steps,
        "max_weight_difference": max((after[k] - expected[k]).abs().max().item() for k in expected),
        "weights_moved": not unchanged(before, after),
        "grad_norm": clean.grad_norm,
        "reference_grad_norm": reference.grad_norm,
        "nonfinite_streak": scaled.nonfinite_streak,
    })
    print("FACTS " + json.dumps(facts), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:4])
