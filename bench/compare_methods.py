"""AsymDSD and Distillation with Contrast on each backbone, at the same budget, each against its own random init.

    python -m bench.compare_methods --out compare-output [--methods dwc-pointnet ...] [--seeds 0 1 2]

Every run is the demo's pipeline with one change of model: the demo corpus (2,000 synthetic shapes of 16
families, 500 held out) sharded once, `launch/pretrain.py` with `configs/pretrain/demo.yaml`'s data, crops,
batch and optimiser for `--epochs` epochs and one teacher schedule for all (EMA momentum 0.99 -> 1, the tiny
model's, so that every teacher moves as far in the short budget), then the linear-SVM protocol on the held-out
shapes in the global crops' geometry (512 points), for the exported teacher and for the same architecture
randomly initialised with the same seed. The contrastive term is off (weight 0) or on (`--contrast-weight`). Training speed is
the run's own `throughput/samples_per_s` (probes off), averaged over its logged steps after the first.

Each finished run appends one line to `<out>/results.jsonl`, and a rerun skips the runs already there, so
a long comparison can be split over several invocations (with the same --epochs: a run is known by its
method, contrast weight, seed and epochs); the table is built from every line in the file.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRETRAIN = ROOT / "launch" / "pretrain.py"
DEMO = ROOT / "configs" / "pretrain" / "demo.yaml"
MOMENTUM = 0.99  # the teacher's EMA momentum at step 0 for every method (then cosine to 1)


@dataclass(frozen=True)
class Method:
    name: str
    overrides: tuple[str, ...]  # of demo.yaml: the model file and its changes


METHODS = {
    m.name: m for m in (
        Method("asymdsd-tiny", ("model=configs/model/tiny.yaml",)),
        Method("dwc-vit-tiny", ("model=configs/model/tiny.yaml", "model.method=dwc")),
        Method("dwc-pointnet", ("model=configs/model/dwc_pointnet.yaml",)),
        Method("dwc-dgcnn", ("model=configs/model/dwc_dgcnn.yaml",)),
    )
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.compare_methods", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("compare-output"))
    p.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--epochs", type=float, default=1.0, help="pretraining epochs of the 2,000 shapes, batch 32")
    p.add_argument("--contrast-weight", type=float, default=0.1, help="the weight of the 'on' runs")
    p.add_argument("--table-only", action="store_true", help="print the table of what is in results.jsonl")
    return p.parse_args(argv)


def shards(out: Path) -> Path:
    """The demo corpus, sharded once into `out/shards` (reused when its manifest exists)."""
    from launch.demo import parse_args as demo_args
    from launch.demo import shard

    target = out / "shards"
    if not (target / "manifest.json").is_file():
        out.mkdir(parents=True, exist_ok=True)
        shard(out, demo_args([]))
    return target


def pretrain(method: Method, contrast: float, seed: int, epochs: float, data: Path, out: Path, uri: str
             ) -> tuple[Path, str]:
    """(export directory, MLflow run id) of one pretraining run in its own process."""
    cmd = [sys.executable, str(PRETRAIN), "--config", str(DEMO), *method.overrides,
           f"model.loss.contrast.weight={contrast}", f"model.teacher.momentum_start={MOMENTUM}", f"train.seed={seed}", f"train.epochs={epochs}",
           f"optim.warmup_epochs={epochs / 4}", f"data.datasets.0.url={data}", f"output_dir={out}",
           "monitor.sets=[]", "checkpoint.every_steps=0", "checkpoint.every_minutes=0",
           f"mlflow.tracking_uri={uri}", "mlflow.experiment=compare-methods",
           "mlflow.system_metrics=false"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("[pretrain]")]
    if proc.returncode != 0 or not lines or "MLflow run " not in lines[-1]:
        raise RuntimeError(f"pretraining failed (exit {proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return out / "export", lines[-1].rsplit("MLflow run ", 1)[1].strip()


def shapes_per_second(run_id: str, uri: str) -> float:
    """Mean of the run's logged throughput after its first logged step (start-up left out)."""
    from mlflow import MlflowClient

    values = sorted((m.step, m.value) for m in MlflowClient(uri).get_metric_history(run_id, "throughput/samples_per_s"))
    return statistics.fmean(v for _, v in values[1:] or values)


def score(export: Path, seed: int, data) -> tuple[float, float]:
    """SVM accuracy of the exported teacher and of its architecture randomly initialised with `seed`."""
    from launch.evaluation.encoders import random_encoder
    from launch.evaluation.protocols import FeatureConfig, svm_run
    from model.export import load_encoder

    encoder, cfg, _ = load_encoder(export)
    features = FeatureConfig(input=data.input)
    return tuple(svm_run(enc, data.train, data.test, "cpu", seed, features).accuracy
                 for enc in (encoder, random_encoder(cfg, seed)))


def run_all(args: argparse.Namespace) -> Path:
    from launch.demo import load_labelled

    results = args.out / "results.jsonl"
    done = {(r["method"], r["contrast"], r["seed"], r["epochs"]) for r in read(results)}
    todo = [(m, c, s) for m in args.methods for c in (0.0, args.contrast_weight) for s in args.seeds
            if (m, c, s, args.epochs) not in done]
    if not todo:
        return results
    data_dir = shards(args.out)
    data = load_labelled(data_dir, 0)
    uri = f"sqlite:///{args.out.resolve() / 'mlflow.db'}"
    for name, contrast, seed in todo:
        start = time.monotonic()
        run_dir = args.out / "runs" / f"{name}-c{contrast:g}-s{seed}"
        export, run_id = pretrain(METHODS[name], contrast, seed, args.epochs, data_dir, run_dir, uri)
        pretrained, random_init = score(export, seed, data)
        line = {"method": name, "contrast": contrast, "seed": seed, "epochs": args.epochs,
                "svm_pretrained": pretrained, "svm_random_init": random_init,
                "shapes_per_s": shapes_per_second(run_id, uri),
                "seconds": round(time.monotonic() - start, 1), "mlflow_run_id": run_id}
        with results.open("a") as f:
            f.write(json.dumps(line) + "\n")
        print(f"[compare] {name} contrast {contrast:g} seed {seed}: SVM {pretrained:.1%} "
              f"(random init {random_init:.1%}), {line['shapes_per_s']:.1f} shapes/s, {line['seconds']:.0f} s",
              flush=True)
    return results


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def table(rows: list[dict]) -> str:
    """Markdown: per method and contrast weight, mean +- std over seeds."""
    def stat(values: list[float], scale: float = 100.0, digits: int = 1) -> str:
        mean = statistics.fmean(values) * scale
        std = statistics.stdev(values) * scale if len(values) > 1 else 0.0
        return f"{mean:.{digits}f} +- {std:.{digits}f}"

    lines = ["| method | contrast | seeds | SVM pretrained (%) | SVM random init (%) | gain (points) | CPU shapes/s |",
             "|---|---|---|---|---|---|---|"]
    groups: dict[tuple[str, float], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["method"], row["contrast"]), []).append(row)
    order = {name: i for i, name in enumerate(METHODS)}
    for (name, contrast), runs in sorted(groups.items(), key=lambda kv: (order[kv[0][0]], kv[0][1])):
        pre = [r["svm_pretrained"] for r in runs]
        rnd = [r["svm_random_init"] for r in runs]
        lines.append(f"| {name} | {contrast:g} | {len(runs)} | {stat(pre)} | {stat(rnd)} | "
                     f"{stat([a - b for a, b in zip(pre, rnd)])} | {stat([r['shapes_per_s'] for r in runs], 1.0)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = args.out / "results.jsonl" if args.table_only else run_all(args)
    print(table(read(results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
