"""The one-command demo (`make demo`): synthetic corpus -> shards -> pretraining -> SVM and part segmentation -> pictures.

Every stage is the code path a cluster run takes, only smaller: `sharding.shard_corpus` on a local Ray
instance writes the labelled synthetic corpus (a pretraining/SVM-train corpus and a held-out test
corpus with another seed), `launch/pretrain.py` trains the `tiny` model through the DeepSpeed engine
(a subprocess, exactly as a user would start it) while its monitor probes the teacher with a linear SVM
and k-NN every 4 epochs, the linear-SVM and part-segmentation protocols score the exported teacher encoder
against the same architecture with random initialisation (segmentation on a subset of the shapes, with the
synthetic corpus's per-point part labels and a short schedule), and the pictures are drawn. All of it is logged to one local
MLflow store (pictures on the run they describe); `summary.json` collects the numbers.

    python -m launch.demo                       # defaults: 2,000 + 500 shapes, 8 epochs (about 15 min on 2 cores)
    python -m launch.demo --shapes 96 --test-shapes 48 --epochs 1 --out /tmp/demo   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from configuration.extras import require
from launch.evaluation.data import LabelledSet, TrainTest
from launch.evaluation.features import InputSpec
from launch.evaluation.part_data import PartSet
from launch.evaluation.partseg import PartRunResult
from launch.evaluation.protocols import RunResult
from launch.training.config import load_pretrain_config
from pipeline.manifest import load_manifest

ROOT = Path(__file__).resolve().parent.parent
PRETRAIN_CONFIG = ROOT / "configs" / "pretrain" / "demo.yaml"
PRESAMPLE = 2048  # points per shape kept for evaluation (uniform subsample), as the monitor's set
MONITOR = "monitor/synthetic"  # the demo config's monitor set


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m launch.demo", description=__doc__.splitlines()[0])
    p.add_argument("--out", default="demo-output", help="everything goes here (default: demo-output)")
    p.add_argument("--shapes", type=int, default=2000, help="pretraining (and SVM training) shapes")
    p.add_argument("--test-shapes", type=int, default=500, help="held-out shapes for the SVM test")
    p.add_argument("--epochs", type=float, default=8, help="pretraining epochs")
    p.add_argument("--num-points", type=int, default=16384, help="surface points per shape")
    p.add_argument("--shard-size", type=int, default=250)
    p.add_argument("--partseg-shapes", type=int, default=96, help="training shapes of the part-segmentation runs")
    p.add_argument("--partseg-test-shapes", type=int, default=160, help="held-out shapes they are scored on")
    p.add_argument("--partseg-epochs", type=int, default=10, help="part-segmentation epochs (reference: 300)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def shard(out: Path, args: argparse.Namespace) -> Path:
    """One sharding job, two synthetic sources: the pretraining corpus (split `train`) and a held-out corpus
    drawn with another seed (split `test`). Its YAML is kept in `out` as the record of what ran."""
    shard_corpus = require("sharding.shard_corpus", "sharding").main

    target = out / "shards"
    job = out / "shard-job.yaml"
    job.write_text(yaml.safe_dump({
        "sources": [
            {"kind": "synthetic", "name": "synthetic", "path": str(args.shapes), "options": {"seed": args.seed}},
            {"kind": "synthetic", "name": "synthetic_test", "path": str(args.test_shapes),
             "options": {"seed": args.seed + 1, "split": "test"}},
        ],
        "output": str(target), "shard_size": args.shard_size, "num_points": args.num_points,
    }, sort_keys=False))
    if shard_corpus(["--config", str(job), "--no-progress"]) != 0:
        raise RuntimeError(f"sharding {job} failed: see {target / 'errors.jsonl'}")
    return target


def pretrain(out: Path, shards: Path, uri: str, args: argparse.Namespace) -> str:
    """Run `launch/pretrain.py` as its own process; returns the MLflow run id it reports."""
    cmd = [sys.executable, str(ROOT / "launch" / "pretrain.py"), "--config", str(PRETRAIN_CONFIG),
           f"output_dir={out / 'pretrain'}", f"data.datasets.0.url={shards}", f"train.epochs={args.epochs}",
           f"train.seed={args.seed}", f"mlflow.tracking_uri={uri}", f"monitor.sets.0.dataset.path={shards}"]
    print("[demo] " + " ".join(cmd), flush=True)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    run_id = None
    for line in proc.stdout:
        if line.startswith("[pretrain]"):
            print(line, end="", flush=True)
            if "MLflow run " in line:
                run_id = line.rsplit("MLflow run ", 1)[1].strip()
    if proc.wait() != 0 or run_id is None:
        raise RuntimeError(f"pretraining failed (exit {proc.returncode}); rerun the command above to see why")
    return run_id


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.monotonic()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{out / 'mlflow.db'}"

    print(f"[demo] sharding {args.shapes} + {args.test_shapes} synthetic shapes", flush=True)
    shards = shard(out, args)
    manifest = load_manifest(str(shards), split=None).document

    print(f"[demo] pretraining tiny for {args.epochs} epochs", flush=True)
    pretrain_start = time.monotonic()
    run_id = pretrain(out, shards, uri, args)
    pretrain_seconds = time.monotonic() - pretrain_start
    steps = steps_of(run_id, uri)
    monitor = monitor_curves(run_id, uri)

    print("[demo] linear SVM on teacher features vs random initialisation", flush=True)
    data = load_labelled(shards, args.seed)
    export = out / "pretrain" / "export"
    scores = evaluate(export, data, uri, args.seed)
    print(f"[demo] part segmentation: {args.partseg_shapes} shapes, {args.partseg_epochs} epochs, pretrained against "
          "random initialisation", flush=True)
    segmented = partseg(export, data, uri, args.seed, args.partseg_shapes, args.partseg_test_shapes,
                        args.partseg_epochs)
    print("[demo] drawing pictures", flush=True)
    draw_pictures(out / "pictures", export, data, scores, segmented, run_id, uri, args.seed)
    summary = {
        "num_shapes": args.shapes, "num_test_shapes": args.test_shapes, "num_shards": len(manifest.shardlist),
        "epochs": args.epochs, "steps": steps, "wall_seconds": round(time.monotonic() - start, 1),
        "pretrain_seconds": round(pretrain_seconds, 1),
        "svm_acc_pretrained": scores["pretrained"].result.accuracy,
        "svm_acc_random_init": scores["random_init"].result.accuracy,
        "svm_input": {"points": data.input.num_points, "patches": data.input.num_patches,
                      "patch_size": data.input.patch_size, "presampled_points": PRESAMPLE},
        "partseg": {name: {"instance_miou": seg.result.final.scores.instance_miou,
                           "class_miou": seg.result.final.scores.class_miou} for name, seg in segmented.items()},
        "partseg_setup": {"train_shapes": args.partseg_shapes, "test_shapes": args.partseg_test_shapes,
                          "epochs": args.partseg_epochs, "points": data.input.num_points,
                          "patches": data.input.num_patches},
        "monitor": monitor,
        "mlflow_tracking_uri": uri, "mlflow_run_id": run_id,
        "mlflow_eval_run_ids": {**{f"svm-{name}": scored.run_id for name, scored in scores.items()},
                                **{f"partseg-{name}": seg.run_id for name, seg in segmented.items()}},
        "encoder_export": str(export), "pictures": str(out / "pictures"),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    svm = monitor["svm"]
    print("[demo] monitor during pretraining, linear SVM: " + ", ".join(f"step {s} {a:.1%}" for s, a in svm.items()))
    print(f"[demo] SVM accuracy on {args.test_shapes} held-out shapes: pretrained "
          f"{summary['svm_acc_pretrained']:.1%}, random init {summary['svm_acc_random_init']:.1%}"
          f" ({summary['wall_seconds']:.0f} s in all)")
    seg = summary["partseg"]
    print(f"[demo] part segmentation, instance mIoU: pretrained {seg['pretrained']['instance_miou']:.1%}, random init "
          f"{seg['random_init']['instance_miou']:.1%}")
    print(f"[demo] summary: {out / 'summary.json'}; pictures: {out / 'pictures'}")
    print(f"[demo] browse the runs: mlflow ui --backend-store-uri {uri}\n"
          f"[demo]   then open {runs_page(uri, run_id)}")
    return 0


def runs_page(uri: str, run_id: str, host: str = "http://127.0.0.1:5000") -> str:
    """The experiment's runs table in the MLflow UI (MLflow 3 opens its GenAI view without `workflowType`)."""
    from mlflow import MlflowClient

    experiment = MlflowClient(uri).get_run(run_id).info.experiment_id
    return f"{host}/#/experiments/{experiment}/runs?workflowType=machine_learning"


def monitor_curves(run_id: str, uri: str) -> dict:
    """{protocol: {step: accuracy}} of the run's monitor, and the seconds its passes took in all."""
    from launch.pictures.training import loss_history_from_mlflow

    keys = [f"{MONITOR}/svm", f"{MONITOR}/knn", f"{MONITOR}/seconds"]
    history = loss_history_from_mlflow(run_id, keys, tracking_uri=uri)
    curves = {key.rsplit("/", 1)[1]: dict(history[key]) for key in keys[:2]}
    return {**curves, "seconds": round(sum(v for _, v in history[keys[2]]), 1)}


@dataclass
class Labelled:
    train: LabelledSet
    test: LabelledSet
    parts: TrainTest  # the same clouds with their per-point part labels (PartSets)
    info: dict
    input: InputSpec


def load_labelled(shards: Path, seed: int) -> Labelled:
    """Both splits with their labels and parts, each cloud uniformly subsampled to PRESAMPLE points as it is read.

    The SVM input is then FPS'd from those points, as the pretraining crops were subsampled: exact FPS
    over all 16,384 stored points costs ~0.1-0.4 s per shape in torch on a CPU, too slow for the demo.
    """
    from launch.evaluation.data import LabelledDataConfig
    from launch.evaluation.part_data import load_part_shards

    data = load_part_shards(LabelledDataConfig(kind="shards", path=str(shards), max_points=PRESAMPLE,
                                               split_seed=seed))
    cfg = load_pretrain_config(PRETRAIN_CONFIG)
    spec = InputSpec(num_points=cfg.data.global_crops.points, num_patches=cfg.model.patchify.global_patches,
                     patch_size=cfg.model.patchify.patch_size)  # the pretraining global-crop geometry
    return Labelled(data.train.labelled(), data.test.labelled(), data, data.info, spec)


@dataclass
class Scored:
    result: RunResult
    run_id: str  # its evaluation run


def evaluate(export: Path, data: Labelled, uri: str, seed: int) -> dict[str, Scored]:
    """The SVM protocol for the pretrained teacher and for the same architecture randomly initialised,
    each logged as an evaluation run linked to the pretraining run."""
    from launch.evaluation.encoders import random_encoder
    from launch.evaluation.protocols import FeatureConfig, svm_run
    from launch.evaluation.report import build_report, log_report, write_report
    from model.export import load_encoder

    encoder, model_cfg, meta = load_encoder(export)
    features = FeatureConfig(input=data.input)
    results = {}
    for name, enc in (("pretrained", encoder), ("random_init", random_encoder(model_cfg, seed))):
        run = svm_run(enc, data.train, data.test, "cpu", seed, features)
        report = build_report("svm", 1, [run], data.train.class_names, data.info,
                              {"source": name, "export": str(export), **meta}, features.model_dump(mode="json"))
        write_report(report, export.parent.parent / f"eval-svm-{name}.json")
        results[name] = Scored(run, log_report(report, uri, experiment="asymdsd-demo", run_name=f"svm-{name}"))
        print(f"[demo] SVM {name}: {run.accuracy:.1%} (mean class {run.mean_class_accuracy:.1%})", flush=True)
    return results


def balanced_first(labels: np.ndarray, n: int) -> np.ndarray:
    """Indices of the first `n` samples taken in turns over the classes: each class's earliest first."""
    turns = np.zeros(len(labels), dtype=np.int64)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        turns[members] = np.arange(len(members))
    return np.lexsort((labels, turns))[:n]


@dataclass
class Segmented:
    result: PartRunResult
    run_id: str  # its evaluation run
    test: PartSet  # the held-out shapes it was scored on


def partseg(export: Path, data: Labelled, uri: str, seed: int, shapes: int, test_shapes: int, epochs: int
            ) -> dict[str, Segmented]:
    """The part-segmentation protocol on `shapes` training and `test_shapes` held-out shapes, as many of each
    family, pretrained against random init, in the pretraining crops' geometry (the encoder's own; at other
    point counts the gap to random init shrinks). Batches of 8 rather than the reference's 16 give the short
    schedule twice the optimizer steps at the same cost."""
    from launch.evaluation.encoders import random_encoder
    from launch.evaluation.partseg import PartSegConfig, train_segmenter
    from launch.evaluation.report import build_part_report, log_report, write_report
    from model.export import load_encoder

    encoder, model_cfg, meta = load_encoder(export)
    train = data.parts.train.subset(balanced_first(data.parts.train.labels, shapes))
    test = data.parts.test.subset(balanced_first(data.parts.test.labels, test_shapes))
    cfg = PartSegConfig(input=data.input.model_copy(update={"subsample": "random"}), batch_size=8).with_epochs(epochs)
    info = {**data.info, "train_size": len(train), "test_size": len(test)}
    results = {}
    for name, enc in (("pretrained", encoder), ("random_init", random_encoder(model_cfg, seed))):
        run = train_segmenter(enc, model_cfg, train, test, cfg, "cpu", seed)
        report = build_part_report([run], train.class_names, train.part_names, info,
                                   {"source": name, "export": str(export), **meta}, cfg.model_dump(mode="json"))
        write_report(report, export.parent.parent / f"eval-partseg-{name}.json")
        run_id = log_report(report, uri, experiment="asymdsd-demo", run_name=f"partseg-{name}")
        results[name] = Segmented(run, run_id, test)
        scores = run.final.scores
        print(f"[demo] part segmentation {name}: instance mIoU {scores.instance_miou:.1%}, class mIoU "
              f"{scores.class_miou:.1%}", flush=True)
    return results


def draw_pictures(out: Path, export: Path, data: Labelled, scores: dict[str, Scored], segmented: dict[str, Segmented],
                  run_id: str, uri: str, seed: int) -> None:
    """Crops, masks and attention of two held-out shapes, the training curves, and the t-SNE maps of the
    pretrained and randomly initialised encoders side by side with their SVM accuracies (on the pretraining
    run); t-SNE and confusion of each SVM evaluation, and predicted against true parts of four held-out
    shapes for each part-segmentation run (on that evaluation's run)."""
    from launch.pictures.evaluation import comparison_figure, confusion_figure, embed_2d, embedding_figure
    from launch.pictures.output import save_figure
    from launch.pictures.sample import Shape, crop_spec, sample_figures
    from launch.pictures.training import loss_curves_figure, loss_history_from_mlflow
    from model.export import load_encoder

    encoder, cfg, _ = load_encoder(export)
    spec = crop_spec(cfg, data.input.num_points)
    names = data.test.class_names
    for i in (0, len(data.test) // 2):
        n = int(data.test.num_points[i])
        shape = Shape(f"held-out shape {i} ({names[data.test.labels[i]]})", data.test.points[i, :n])
        for kind, fig in sample_figures(shape, encoder, cfg, spec, seed + i).items():
            save_figure(fig, out, f"shape{i}_{kind}", run_id, uri)
    history = loss_history_from_mlflow(run_id, tracking_uri=uri)
    save_figure(loss_curves_figure(history, title="Pretraining curves and monitor (tiny, synthetic corpus)"), out,
                "loss_curves", run_id, uri)
    maps = {name: embed_2d(scored.result.features["test"]) for name, scored in scores.items()}  # t-SNE once each
    for name, scored in scores.items():
        result = scored.result
        save_figure(embedding_figure(maps[name], data.test.labels, names, embedded=True,
                                     title=f"t-SNE of held-out features, {name.replace('_', ' ')}"),
                    out, f"tsne_{name}", scored.run_id, uri)
        save_figure(confusion_figure(result.y_true, result.y_pred, names,
                                     title=f"Linear SVM on {name.replace('_', ' ')} features"),
                    out, f"confusion_{name}", scored.run_id, uri)
    save_figure(comparison_figure({name.replace("_", " "): maps[name] for name in scores}, data.test.labels, names,
                                  {name.replace("_", " "): scored.result.accuracy for name, scored in scores.items()},
                                  embedded=True,
                                  title="t-SNE of held-out features: pretrained encoder against its random init"),
                out, "tsne_comparison", run_id, uri)
    for name, seg in segmented.items():
        save_figure(parts_figure(seg.result, seg.test, f"Part segmentation, {name.replace('_', ' ')}"),
                    out, f"partseg_{name}", seg.run_id, uri)


def parts_figure(result: PartRunResult, test: PartSet, title: str):
    """Truth against prediction for four held-out shapes of different families, each with its IoU."""
    from launch.evaluation.part_metrics import shape_ious
    from launch.pictures.segmentation import part_segmentation_figure

    final = result.final
    labels = test.labels
    ious = shape_ious(final.pred, final.truth, final.num_points, labels, test.category_parts)
    multi_part = [i for i in range(len(labels)) if len(test.category_parts[labels[i]]) > 1]
    rows = [multi_part[j] for j in np.linspace(0, len(multi_part) - 1, min(4, len(multi_part))).astype(int)]
    clouds = [final.points[i, : final.num_points[i]] for i in rows]
    return part_segmentation_figure(clouds, [final.truth[i, : final.num_points[i]] for i in rows],
                                    [final.pred[i, : final.num_points[i]] for i in rows], test.part_names,
                                    [f"{test.class_names[labels[i]]}: IoU {ious[i]:.2f}" for i in rows], title=title)


def steps_of(run_id: str, uri: str) -> int:
    from mlflow import MlflowClient

    return int(max(m.step for m in MlflowClient(uri).get_metric_history(run_id, "loss/total")))


if __name__ == "__main__":
    sys.exit(main())
