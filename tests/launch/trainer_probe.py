"""Drives the real trainer and DeepSpeed engine through single steps and prints JSON facts about them.

Run in its own process (it creates a process group): `python trainer_probe.py MODE SHARDS OUT STAGE`.

* `loss_scaling`: an overflowed loss-scaled step, one at the scale's floor, then a clean one. fp16 does not run on CPU, so the
  loss scaling runs under fp32 here: a scale of 2**127 makes the scaled loss (> 2) overflow exactly as
  an fp16 step overflows, and a power-of-two scale that does not overflow must give bit-identical
  weights to an unscaled step.
* `autocast`: one bf16 step, recording the dtypes that teacher and student matmuls really ran in
  (inside the engine's forward too) and the dtype of the weights.
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


def trainer(shards: str, out: Path, stage: str, *overrides: str) -> Pretrainer:
    cfg = load_pretrain_config(DEMO, small_run(Path(shards), out, "mlflow.enabled=false",
                                               f"deepspeed.zero_optimization.stage={stage}", *overrides))
    return Pretrainer(cfg, init_distributed("cpu"))


def first_batch(trainer: Pretrainer):
    loader, _ = make_loader(trainer.loader_cfg, trainer.manifests, 0, trainer.cfg.train.global_batch, 0, 1, 0, None)
    return next(iter(loader))


def loss_scaling(shards: str, out: Path, stage: str) -> dict:
    scaled, plain = trainer(shards, out / "scaled", stage), trainer(shards, out / "plain", stage)
    batch = first_batch(scaled)
    values = scaled.schedule.at(3)  # past the first warm-up steps: a visible update

    scaled.loss_scaling = LossScaling(scaled.engine, DynamicLossScale(scale=2.0**127))
    before = snapshot(scaled)
    overflowed = scaled._optimizer_step(batch, 0, values)
    facts = {
        "overflow_applied": overflowed.applied,
        "overflow_left_everything": unchanged(before, snapshot(scaled)),
        "optimizer_state_after_overflow": sum(len(s) for s in scaled.optimizer.state.values()),
        "nonfinite_total": scaled.nonfinite_total,
        "streak_after_overflow": scaled.nonfinite_streak,
        "scale_after_overflow": scaled.loss_scaling.scale.scale,
    }
    scaled.loss_scaling.scale = DynamicLossScale(scale=2.0**127, min_scale=2.0**127)  # no room to back off
    floor = scaled._optimizer_step(batch, 0, values)
    facts.update({"floor_applied": floor.applied, "streak_at_floor": scaled.nonfinite_streak,
                  "scale_at_floor": scaled.loss_scaling.scale.scale, "total_at_floor": scaled.nonfinite_total})
    scaled.loss_scaling.scale = DynamicLossScale(scale=2.0**10)
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
    return facts


def autocast(shards: str, out: Path, stage: str) -> dict:
    bf16 = trainer(shards, out, stage, "train.precision=bf16")
    seen: dict[str, set[str]] = {}
    for name, module in (("student", bf16.engine.module), ("teacher", bf16.model.teacher)):
        for layer in (module.encoder.blocks[0].attn.qkv, module.encoder.patch_embed.stages[0].layers[0]):
            layer.register_forward_hook(lambda _m, _i, y, name=name: seen.setdefault(name, set()).add(str(y.dtype)))
    outcome = bf16._optimizer_step(first_batch(bf16), 0, bf16.schedule.at(3))
    return {"applied": outcome.applied, "student_matmuls": sorted(seen["student"]),
            "teacher_matmuls": sorted(seen["teacher"]),
            "weight_dtypes": sorted({str(p.dtype) for p in bf16.engine.module.parameters()})}


if __name__ == "__main__":
    mode, shards, out, stage = sys.argv[1:5]
    facts = {"loss_scaling": loss_scaling, "autocast": autocast}[mode](shards, Path(out), stage)
    print("FACTS " + json.dumps(facts), flush=True)
