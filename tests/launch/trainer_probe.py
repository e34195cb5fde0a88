"""Drives the real trainer and DeepSpeed engine through single steps and prints JSON facts about them.

Run in its own process (it creates a process group): `python trainer_probe.py MODE SHARDS OUT STAGE`.

* `loss_scaling`: an overflowed loss-scaled step, one at the scale's floor, then a clean one. fp16 does not run on CPU, so the
  loss scaling runs under fp32 here: a scale of 2**127 makes the scaled loss (> 2) overflow exactly as
  an fp16 step overflows, and a power-of-two scale that does not overflow must give bit-identical
  weights to an unscaled step.
* `autocast`: one bf16 step, recording the dtypes that teacher and student matmuls really ran in
  (inside the engine's forward too) and the dtype of the weights.
* `observe`: three steps of two micro-batches with the teacher's targets observed and three without,
  from the same start on the same batches: their losses and weights, and the observed target rows.
"""

from __future__ import annotations

import json
import sys
from itertools import islice
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from launch.training.config import load_pretrain_config  # noqa: E402
from launch.training.distributed import init_distributed  # noqa: E402
from launch.training.precision import DynamicLossScale, LossScaling  # noqa: E402
from launch.training.preflight import preflight  # noqa: E402
from launch.training.step import StepOutcome  # noqa: E402
from launch.training.trainer import Pretrainer  # noqa: E402
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
    return Pretrainer(cfg, init_distributed("cpu"), preflight(cfg))


def batches(trainer: Pretrainer, n: int) -> list:
    loader, _ = make_loader(trainer.data.model_copy(update={"num_workers": 0}), trainer.patches, trainer.cfg.train.seed,
                            trainer.manifests, 0, trainer.cfg.train.global_batch, 0, 1)
    return list(islice(loader, n))


def first_batch(trainer: Pretrainer):
    return batches(trainer, 1)[0]


def optimizer_step(trainer: Pretrainer, batch, values) -> StepOutcome:
    """The trainer's own step, counted as the loop counts it."""
    outcome = trainer.train_step(batch, 0, values)
    trainer.skipped.record(1, outcome, trainer.train_step.loss_scaling.scale.scale)
    return outcome


def loss_scaling(shards: str, out: Path, stage: str) -> dict:
    scaled, plain = trainer(shards, out / "scaled", stage), trainer(shards, out / "plain", stage)
    batch = first_batch(scaled)
    values = scaled.schedule.at(3)  # past the first warm-up steps: a visible update

    scaled.train_step.loss_scaling = LossScaling(scaled.engine, DynamicLossScale(scale=2.0**127))
    before = snapshot(scaled)
    overflowed = optimizer_step(scaled, batch, values)
    facts = {
        "overflow_applied": overflowed.applied,
        "overflow_left_everything": unchanged(before, snapshot(scaled)),
        "optimizer_state_after_overflow": sum(len(s) for s in scaled.optimizer.state.values()),
        "nonfinite_total": scaled.skipped.total,
        "streak_after_overflow": scaled.skipped.streak,
        "scale_after_overflow": scaled.train_step.loss_scaling.scale.scale,
    }
    scaled.train_step.loss_scaling.scale = DynamicLossScale(scale=2.0**127, min_scale=2.0**127)  # no room to back off
    floor = optimizer_step(scaled, batch, values)
    facts.update({"floor_applied": floor.applied, "streak_at_floor": scaled.skipped.streak,
                  "scale_at_floor": scaled.train_step.loss_scaling.scale.scale, "total_at_floor": scaled.skipped.total})
    scaled.train_step.loss_scaling.scale = DynamicLossScale(scale=2.0**10)
    clean = optimizer_step(scaled, batch, values)
    reference = plain.train_step(batch, 0, values)
    after, expected = snapshot(scaled), snapshot(plain)
    facts.update({
        "clean_applied": clean.applied,
        "scale_after_clean": scaled.train_step.loss_scaling.scale.scale,
        "clean_steps": scaled.train_step.loss_scaling.scale.clean_steps,
        "max_weight_difference": max((after[k] - expected[k]).abs().max().item() for k in expected),
        "weights_moved": not unchanged(before, after),
        "grad_norm": clean.grad_norm,
        "reference_grad_norm": reference.grad_norm,
        "nonfinite_streak": scaled.skipped.streak,
    })
    return facts


def autocast(shards: str, out: Path, stage: str) -> dict:
    bf16 = trainer(shards, out, stage, "train.precision=bf16")
    seen: dict[str, set[str]] = {}
    for name, module in (("student", bf16.engine.module), ("teacher", bf16.model.teacher)):
        for layer in (module.encoder.blocks[0].attn.qkv, module.encoder.patch_embed.stages[0].layers[0]):
            layer.register_forward_hook(lambda _m, _i, y, name=name: seen.setdefault(name, set()).add(str(y.dtype)))
    outcome = bf16.train_step(first_batch(bf16), 0, bf16.schedule.at(3))
    return {"applied": outcome.applied, "student_matmuls": sorted(seen["student"]),
            "teacher_matmuls": sorted(seen["teacher"]),
            "weight_dtypes": sorted({str(p.dtype) for p in bf16.engine.module.parameters()})}


def observe(shards: str, out: Path, stage: str) -> dict:
    runs = {name: trainer(shards, out / name, stage, "train.micro_batch=4") for name in ("observed", "plain")}
    facts: dict = {"grad_accum": runs["observed"].train_step.grad_accum}
    for name, run in runs.items():
        losses, rows = [], []
        for step, batch in enumerate(batches(run, 3)):
            outcome = run.train_step(batch, 0, run.schedule.at(step), observe=name == "observed")
            losses.append({k: v.item() for k, v in outcome.terms.items()})
            rows.append(None if outcome.targets is None else {h: s.rows.item() for h, s in outcome.targets.items()})
        facts[name] = {"losses": losses, "rows": rows}
    facts["same_weights"] = unchanged(snapshot(runs["observed"]), snapshot(runs["plain"]))
    return facts


if __name__ == "__main__":
    mode, shards, out, stage = sys.argv[1:5]
    facts = {"loss_scaling": loss_scaling, "autocast": autocast, "observe": observe}[mode](shards, Path(out), stage)
    print("FACTS " + json.dumps(facts), flush=True)
