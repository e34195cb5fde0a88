"""End-to-end training throughput of a pretraining config: real shards, the real loader, the DeepSpeed engine.

Runs `launch.training.trainer.Pretrainer` in this process (one rank: CPU or one GPU) for --warmup + --steps
optimizer steps with MLflow off (`mlflow.enabled=false`: nothing is tracked, MLflow need not be
installed), keeps the throughput figures the trainer computes for its logs at every step, and reports
over the timed steps:

* shapes/s (global batch x steps / wall time) and, on GPUs, MFU;
* the data-wait fraction: the share of the step loop spent waiting for the loader;
* the loader's capacity, num_workers x global batch / (worker seconds per batch), against the model's
  pace without waiting, shapes/s / (1 - wait fraction). The smaller one is the bottleneck.

    python -m bench.train_throughput --config configs/pretrain/demo.yaml --steps 30
    python -m bench.train_throughput --config configs/pretrain/asymdsd_s_shapenet.yaml --steps 50 \\
        data.datasets.0.url=data/shards/shapenet          # on a GPU: bf16 (train.precision=auto), with MFU

Trailing KEY=VALUE arguments override the config as on the pretraining command line. The last printed
line is `RESULT {json}`; --json PATH also writes it to a file.
"""

from __future__ import annotations

import argparse
import sys
import tempfile

from bench.common import add_json_option, benchmark_main
from launch.training.config import load_pretrain_config
from launch.training.distributed import init_distributed
from launch.training.preflight import preflight
from launch.training.throughput import Throughput
from launch.training.trainer import Pretrainer


class StepWindows:
    """Records each window `Throughput.metrics` returns to the trainer (one per step with log_every=1)."""

    def __init__(self, throughput: Throughput) -> None:
        self.windows: list[dict[str, float]] = []
        self._metrics = throughput.metrics
        throughput.metrics = self

    def __call__(self) -> dict[str, float]:
        window = self._metrics()
        self.windows.append(window)
        return window


def summarise(windows: list[dict[str, float]], global_batch: int, num_workers: int) -> dict:
    """Throughput over the given one-step windows: every window holds one global batch, so the total
    time is the sum of global_batch / rate and the fractions are weighted by each step's time."""
    seconds = [global_batch / w["throughput/samples_per_s"] for w in windows]
    total = sum(seconds)
    speed = global_batch * len(windows) / total
    wait = sum(w["data/wait_fraction"] * s for w, s in zip(windows, seconds)) / total
    worker_s = sum(w["data/worker_seconds_per_batch"] for w in windows) / len(windows)
    loader_capacity = max(num_workers, 1) * global_batch / worker_s
    model_pace = speed / max(1.0 - wait, 1e-9)
    summary = {
        "shapes_per_s": round(speed, 2), "data_wait_fraction": round(wait, 4),
        "loader_capacity_shapes_per_s": round(loader_capacity, 2), "model_shapes_per_s": round(model_pace, 2),
        "bottleneck": "loader" if loader_capacity < model_pace else "model",
    }
    mfu = [w["throughput/mfu"] for w in windows if "throughput/mfu" in w]
    if mfu:
        summary["mfu"] = round(sum(m * s for m, s in zip(mfu, seconds)) / total, 4)
    return summary


def measure(args: argparse.Namespace) -> dict:
    config, steps, warmup = args.config, args.steps, args.warmup
    with tempfile.TemporaryDirectory(prefix="train-bench-") as out:  # the final checkpoint and export
        cfg = load_pretrain_config(config, [
            *args.overrides, f"output_dir={out}", f"train.max_steps={warmup + steps}", "train.log_every=1",
            "checkpoint.every_steps=0", "checkpoint.every_minutes=0", "mlflow.enabled=false", "monitor.sets=[]",
        ])
        inputs = preflight(cfg)
        env = init_distributed(cfg.train.device)
        trainer = Pretrainer(cfg, env, inputs)
        steps_seen = StepWindows(trainer.throughput)
        trainer.run()
    timed = steps_seen.windows[warmup:]
    if not timed:
        raise RuntimeError(f"the run logged {len(steps_seen.windows)} steps, none after the {warmup} warm-up steps")
    return {
        "config": config, "model": cfg.model.name, "device": str(env.device), "precision": trainer.precision,
        "compile": cfg.train.compile, "global_batch": cfg.train.global_batch, "num_workers": cfg.data.num_workers,
        "loader_patchify": cfg.data.loader_patchify, "warmup": warmup, "steps": len(timed),
        **summarise(timed, cfg.train.global_batch, cfg.data.num_workers),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True)
    p.add_argument("--steps", type=int, default=30, help="timed optimizer steps")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (workers, JIT, caches)")
    add_json_option(p)
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    return p.parse_args(argv)


main = benchmark_main(parse_args, measure)


if __name__ == "__main__":
    sys.exit(main())
