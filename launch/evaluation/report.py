"""Evaluation results as a JSON report and an MLflow run linked to the pretraining run.

Numbers are reported as mean +- sample standard deviation over the runs (seeds, and folds for
few-shot), never as the best run: accuracy and mean class accuracy for classification, instance and class
mIoU, point accuracy and per-category IoU for part segmentation (`report["metrics"]` names the headline
ones); test-time voting is part of the protocol's name in both the report
and the metric names, so voted and unvoted numbers cannot be mistaken for each other. The trained heads'
per-epoch history (training loss, and test accuracy where tested) is logged with the epoch as step.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from configuration.redact import redact
from launch.evaluation.partseg import PartRunResult
from launch.evaluation.protocols import RunResult
from launch.tracking import Tracker, flatten, git_commit

DEFAULT_EXPERIMENT = "evaluation"


def mean_std(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=np.float64)
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0, "n": len(arr)}


def protocol_label(protocol: str, voting: int) -> str:
    return f"{protocol}_vote{voting}" if voting > 1 else protocol


CLASSIFICATION_METRICS = ("accuracy", "mean_class_accuracy")
PART_METRICS = ("instance_miou", "class_miou", "point_accuracy")


def build_report(protocol: str, voting: int, runs: list[RunResult], class_names: tuple[str, ...],
                 dataset: dict[str, Any], encoder: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    return {
        "protocol": protocol_label(protocol, voting),
        "voting": voting,
        "metrics": list(CLASSIFICATION_METRICS),
        "accuracy": mean_std([r.accuracy for r in runs]),
        "mean_class_accuracy": mean_std([r.mean_class_accuracy for r in runs]),
        "runs": [{"seed": r.seed, "fold": r.fold, "accuracy": r.accuracy,
                  "mean_class_accuracy": r.mean_class_accuracy, "history": r.history,
                  "y_true": r.y_true.tolist(), "y_pred": r.y_pred.tolist()} for r in runs],
        "class_names": list(class_names),
        "dataset": redact(dataset),
        "encoder": redact(encoder),
        "config": redact(config),
        "git_commit": git_commit(),
    }


def build_part_report(runs: list[PartRunResult], class_names: tuple[str, ...], part_names: tuple[str, ...],
                      dataset: dict[str, Any], encoder: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """The part-segmentation report: headline mIoUs and per-category IoU as mean +- std over seeds."""
    per_run = [{"seed": r.seed, **r.final.scores.headline(), "category_iou": r.final.scores.category_iou,
                "history": r.history} for r in runs]
    categories = [c for c in class_names if all(c in r["category_iou"] for r in per_run)]
    return {
        "protocol": "partseg",
        "voting": 1,
        "metrics": list(PART_METRICS),
        **{m: mean_std([r[m] for r in per_run]) for m in PART_METRICS},
        "category_iou": {c: mean_std([r["category_iou"][c] for r in per_run]) for c in categories},
        "runs": per_run,
        "class_names": list(class_names),
        "part_names": list(part_names),
        "dataset": redact(dataset),
        "encoder": redact(encoder),
        "config": redact(config),
        "git_commit": git_commit(),
    }


def write_report(report: dict[str, Any], path: str | os.PathLike) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, out)
    return out


def _parent_tags(tracker_uri: str, pretrain_run_id: str | None) -> dict[str, str]:
    """Link to the pretraining run: always a `pretrain_run_id` tag; `mlflow.parentRunId` (the run shows
    nested under it in the UI) only when that run is in this tracking store, so the link never dangles."""
    if not pretrain_run_id:
        return {}
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    tags = {"pretrain_run_id": pretrain_run_id}
    try:
        MlflowClient(tracker_uri).get_run(pretrain_run_id)
        tags["mlflow.parentRunId"] = pretrain_run_id
    except MlflowException:
        pass
    return tags


EPOCH_METRICS = {"loss": "train_loss", "accuracy": "test_accuracy", "instance_miou": "test_instance_miou",
                 "class_miou": "test_class_miou"}  # history key -> metric name


def epoch_series(label: str, runs: list[dict[str, Any]]) -> list[tuple[str, float, int]]:
    """(key, value, epoch) points of every run's history, keyed `<label>[/fold<f>]/seed<s>/<metric>`."""
    points = []
    for run in runs:
        prefix = f"{label}/" + (f"fold{run['fold']}/" if run.get("fold") is not None else "") + f"seed{run['seed']}"
        for record in run.get("history", []):
            points.extend((f"{prefix}/{name}", record[key], int(record["epoch"]))
                          for key, name in EPOCH_METRICS.items() if key in record)
    return points


def log_report(report: dict[str, Any], uri: str, experiment: str = DEFAULT_EXPERIMENT,
               run_name: str | None = None) -> str:
    """One MLflow run with the config as params, per-run, per-epoch and summary metrics, and the report as
    an artifact."""
    label = report["protocol"]
    tags = {"evaluation.protocol": label, "evaluation.dataset": str(report["dataset"].get("kind")),
            **_parent_tags(uri, report["encoder"].get("mlflow_run_id"))}
    tracker = Tracker(uri, experiment, None, run_name or f"eval-{label}", tags)
    try:
        tracker.log_params(flatten({"protocol": label, "dataset": report["dataset"], "config": report["config"]}))
        metrics = report["metrics"]
        for i, run in enumerate(report["runs"]):
            tracker.log_metrics({f"{label}/{m}": run[m] for m in metrics}, step=i)
        summary = {f"{label}/{m}_{k}": v for m in metrics for k, v in report[m].items() if k != "n"}
        summary.update({f"{label}/category_iou/{c}_{k}": v for c, stats in report.get("category_iou", {}).items()
                        for k, v in stats.items() if k != "n"})
        tracker.log_metrics(summary, step=len(report["runs"]))
        tracker.log_series(epoch_series(label, report["runs"]))
        tracker.log_dict(report, f"evaluation/{label}.json")
        tracker.finish("FINISHED")
    except BaseException:
        tracker.finish("FAILED")
        raise
    return tracker.run_id
