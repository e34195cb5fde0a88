"""End-to-end training throughput of a pretraining config: real shards, the real loader, the DeepSpeed engine.

Runs `launch.trainer.Pretrainer` in this process (one rank: CPU or one GPU) for --warmup + --steps
optimizer steps, logging every step to a throw-away MLflow store, and reports over the timed steps:

* shapes/s (global batch x steps / wall time) and, on GPUs, MFU;
* the data-wait fraction: the share of the step loop spent waiting for the loader;
* the loader's capacity, num_workers x global batch / (worker seconds per batch), against the model's
  pace without waiting, shapes/s / (1 - wait fraction). The smaller one is the bottleneck.

    python bench/train_throughput.py --config configs/pretrain/demo.yaml --steps 30
    python bench/train_throughput.py --config configs/pretrain/asymdsd_s_shapenet.yaml --steps 50 \
        data.datasets.0.url=data/shards/shapenet          # on a GPU: bf16, with MFU

Trailing KEY=VALUE arguments override the config as on the pretraining command line. The last printed
line is `RESULT {json}`; --json PATH also writes it to a file.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from launch.config import load_pretrain_config  # noqa: E402
from launch.distributed import init_distributed  # noqa: E402
from launch.trainer import Pretrainer  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True)
    p.add_argument("--steps", type=int, default=30, help="timed optimizer steps")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (workers, JIT, caches)")
    p.add_argument("--json", help="also write the result here")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    args = p.parse_args()

    out = Path(tempfile.mkdtemp(prefix="train-bench-"))
    total = args.warmup + args.steps
    cfg = load_pretrain_config(args.config, [
        *args.overrides, f"output_dir={out}", f"train.max_steps={total}", "train.log_every=1",
        "checkpoint.every_steps=0", "checkpoint.every_minutes=0", f"mlflow.tracking_uri=sqlite:///{out}/mlflow.db",
        "mlflow.system_metrics=false",
    ])
    env = init_distributed(cfg.train.device)
    trainer = Pretrainer(cfg, env)
    result = trainer.run()

    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{out}/mlflow.db")

    def timed(key: str) -> list[float]:
        points = sorted((m.step, m.value) for m in client.get_metric_history(result.mlflow_run_id, key))
        return [v for step, v in points if step > args.warmup]

    speed = statistics.fmean(timed("throughput/samples_per_s"))
    wait = statistics.fmean(timed("data/wait_fraction"))
    worker_s = statistics.fmean(timed("data/worker_seconds_per_batch"))
    workers = max(cfg.data.num_workers, 1)
    loader_capacity = workers * cfg.train.global_batch / worker_s
    model_pace = speed / max(1.0 - wait, 1e-9)
    report = {
        "config": args.config, "model": cfg.model.name, "device": str(env.device),
        "precision": "bf16" if cfg.bf16 else "fp32", "global_batch": cfg.train.global_batch,
        "num_workers": cfg.data.num_workers, "loader_patchify": cfg.data.loader_patchify, "steps": args.steps,
        "shapes_per_s": round(speed, 2), "data_wait_fraction": round(wait, 4),
        "loader_capacity_shapes_per_s": round(loader_capacity, 2), "model_shapes_per_s": round(model_pace, 2),
        "bottleneck": "loader" if loader_capacity < model_pace else "model",
    }
    mfu = timed("throughput/mfu")
    if mfu:
        report["mfu"] = round(statistics.fmean(mfu), 4)
    line = json.dumps(report)
    print(f"RESULT {line}")
    if args.json:
        Path(args.json).write_text(line + "\n")


if __name__ == "__main__":
    main()
