"""Evaluate a pretrained point encoder on labelled data with a downstream protocol.

    python -m launch.evaluate --encoder runs/demo/export --dataset shards:data/synthetic \
        --protocol svm --seeds 3 --report out/svm.json
    python -m launch.evaluate --official-ckpt checkpoints/AsymDSD-S_ShapeNet.ckpt \
        --dataset scanobjectnn:data/ScanObjectNN/h5_files.zip --variant pb_t50_rs --protocol finetune
    python -m launch.evaluate --config eval.yaml [flags that override it]

The encoder is an export directory (`launch.export`; DeepSpeed checkpoints are exported first) or a
published AsymDSD checkpoint. Results are mean +- std over seeds, written as a JSON report and logged
to MLflow in a run tagged with the pretraining run. See `launch.evaluation` for the protocols.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from launch.evaluation.data import DatasetError, dataset_spec
from launch.evaluation.official import OfficialCheckpointError
from launch.evaluation.protocols import PROTOCOLS
from launch.evaluation.restricted_pickle import RefusedPickle
from launch.evaluation.run import eval_config_from_dict, load_eval_config, run_evaluation
from model.config import ConfigError
from pipeline.manifest import ManifestError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m launch.evaluate", description=__doc__.splitlines()[0])
    p.add_argument("--config", help="YAML evaluation config (keys as in launch.evaluation.run.EvalConfig)")
    src = p.add_argument_group("encoder")
    src.add_argument("--encoder", help="export directory (encoder.safetensors + model.yaml)")
    src.add_argument("--official-ckpt", dest="official_ckpt", help="published AsymDSD .ckpt")
    src.add_argument("--branch", choices=("teacher", "student"), help="official checkpoint branch (default teacher)")
    src.add_argument("--model-config", dest="model_config_path", help="architecture of an official checkpoint")
    src.add_argument("--random-init", dest="random_init", action="store_true", default=None,
                     help="re-initialise the weights: the no-pretraining baseline")
    data = p.add_argument_group("data")
    data.add_argument("--dataset", help="KIND:PATH, KIND one of shards, scanobjectnn, modelnet40_h5")
    data.add_argument("--variant", choices=("obj_bg", "obj_only", "pb_t50_rs"), help="ScanObjectNN variant")
    data.add_argument("--label-key", dest="label_key", help="shard metadata key of the class (default label)")
    data.add_argument("--test-fraction", dest="test_fraction", type=float,
                      help="hold-out share for shards without a test split (default 0.3)")
    data.add_argument("--fewshot-path", dest="fewshot_path", help="ModelNetFewshot folder or zip")
    data.add_argument("--way", type=int, help="few-shot N (default 5)")
    data.add_argument("--shot", type=int, help="few-shot K (default 10)")
    data.add_argument("--folds", type=int, nargs="+", help="few-shot folds (default 0..9)")
    run = p.add_argument_group("protocol")
    run.add_argument("--protocol", choices=PROTOCOLS)
    run.add_argument("--seeds", type=int, help="runs with seeds 0..N-1 (default 1)")
    run.add_argument("--device", help="cpu (default), cuda, cuda:1, ...")
    run.add_argument("--epochs", type=int, help="total epochs of a trained-head protocol (reference: 150)")
    run.add_argument("--batch-size", dest="batch_size", type=int)
    run.add_argument("--voting", type=int, help="test-time votes (trained heads only; default 1 = none)")
    run.add_argument("--eval-every", dest="eval_every", type=int, help="also test every N epochs")
    run.add_argument("--knn-k", dest="knn_k", type=int)
    run.add_argument("--svm-c", dest="svm_c", type=float)
    run.add_argument("--num-points", dest="num_points", type=int)
    run.add_argument("--num-patches", dest="num_patches", type=int)
    run.add_argument("--patch-size", dest="patch_size", type=int)
    out = p.add_argument_group("output")
    out.add_argument("--report", help="JSON report path (default evaluation.json)")
    out.add_argument("--no-mlflow", dest="no_mlflow", action="store_true")
    out.add_argument("--tracking-uri", dest="tracking_uri")
    out.add_argument("--experiment")
    return p


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The flags given, as EvalConfig keys (absent flags leave the YAML or the defaults alone)."""
    given = {k: v for k, v in vars(args).items() if v is not None and k != "config"}
    out: dict[str, Any] = {k: given.pop(k) for k in list(given) if k in (
        "encoder", "official_ckpt", "branch", "model_config_path", "random_init", "protocol", "fewshot_path",
        "seeds", "device", "epochs", "batch_size", "voting", "eval_every", "knn_k", "svm_c", "report")}
    if "dataset" in given:
        options = {k: given.pop(k) for k in ("variant", "label_key", "test_fraction") if k in given}
        out["dataset"] = {**dataset_spec(given.pop("dataset")), **options}
    fewshot = {k: given.pop(k) for k in ("way", "shot", "folds") if k in given}
    if fewshot:
        out["fewshot"] = fewshot
    inputs = {k: given.pop(k) for k in ("num_points", "num_patches", "patch_size") if k in given}
    if inputs:
        out["input"] = inputs
    mlflow = {k: given.pop(k) for k in ("tracking_uri", "experiment") if k in given}
    if given.pop("no_mlflow", False):
        mlflow["enabled"] = False
    if mlflow:
        out["mlflow"] = mlflow
    leftover = sorted(k for k, v in given.items() if v is not False)
    if leftover:
        raise ConfigError(f"--{leftover[0].replace('_', '-')} needs --dataset (or belongs to another option group)")
    return out


def _summary(report: dict) -> str:
    acc, mca = report["accuracy"], report["mean_class_accuracy"]
    return (f"{report['protocol']}: accuracy {100 * acc['mean']:.2f} +- {100 * acc['std']:.2f} "
            f"(mean class {100 * mca['mean']:.2f} +- {100 * mca['std']:.2f}) over {acc['n']} run(s)")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        overrides = _overrides(args)
        cfg = load_eval_config(args.config, overrides) if args.config else eval_config_from_dict(overrides, "flags")
        report, _ = run_evaluation(cfg)
    except (ConfigError, DatasetError, ManifestError, OfficialCheckpointError, RefusedPickle, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(_summary(report))
    print(f"report: {cfg.report}" + (f" (MLflow run {report['mlflow_run_id']})" if "mlflow_run_id" in report else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
