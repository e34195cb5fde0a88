"""Evaluate a pretrained point encoder on labelled data with a downstream protocol.

    python -m launch.evaluate --encoder runs/demo/export --dataset shards:data/synthetic \
        --protocol svm --seeds 3 --report out/svm.json
    python -m launch.evaluate --official-ckpt checkpoints/AsymDSD-S_ShapeNet.ckpt \
        --dataset scanobjectnn:data/ScanObjectNN/h5_files.zip --variant pb_t50_rs --protocol finetune
    python -m launch.evaluate --encoder runs/demo/export --protocol partseg \
        --dataset shapenetpart:data/shapenetcore_partanno_segmentation_benchmark_v0_normal.zip
    python -m launch.evaluate --config eval.yaml [flags that override it]

The encoder is an export directory (`model.export`; DeepSpeed checkpoints are exported first) or a
published AsymDSD checkpoint. Results are mean +- std over seeds, written as a JSON report and logged
to MLflow in a run linked to the pretraining run, in its store unless told otherwise.
`launch.evaluation.protocols` describes the protocols.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import yaml

from configuration.cli import add_print_config, print_config, run_cli
from launch.evaluation.data import DATASET_KINDS, DatasetError, dataset_spec
from launch.evaluation.protocols import PROTOCOLS
from launch.evaluation.restricted_pickle import RefusedPickle
from launch.evaluation.run import load_eval_config, run_evaluation
from model.official import OfficialCheckpointError
from pipeline.manifest import ManifestError

ERRORS = (DatasetError, ManifestError, OfficialCheckpointError, RefusedPickle, FileNotFoundError)


@dataclass(frozen=True)
class Flag:
    """A command-line flag and the `EvalConfig` key it sets (dotted for nested sections)."""

    option: str
    key: str
    help: str | None = None
    type: Callable[[str], Any] | None = None
    choices: tuple[str, ...] | None = None
    nargs: str | None = None
    const: Any = None  # a switch: the value it sets
    parse: Callable[[Any], dict[str, Any]] | None = None  # a value that sets several keys under `key`

    def add_to(self, group: argparse._ArgumentGroup) -> None:
        if self.const is not None:
            group.add_argument(self.option, dest=self.key, action="store_const", const=self.const, help=self.help)
            return
        metavar = None if self.choices else self.key.rsplit(".", 1)[-1].upper()
        group.add_argument(self.option, dest=self.key, type=self.type, choices=self.choices, nargs=self.nargs,
                           metavar=metavar, help=self.help)

    def overrides(self, value: Any) -> list[str]:
        """`key=value` overrides of the config for the flag's value."""
        if self.parse is None:
            return [f"{self.key}={yaml_value(value)}"]
        return [f"{self.key}.{k}={yaml_value(v)}" for k, v in self.parse(value).items()]


FLAGS: dict[str, tuple[Flag, ...]] = {
    "encoder": (
        Flag("--encoder", "encoder", "export directory (encoder.safetensors + model.yaml)"),
        Flag("--official-ckpt", "official_ckpt", "published AsymDSD .ckpt"),
        Flag("--branch", "branch", "official checkpoint branch (default teacher)", choices=("teacher", "student")),
        Flag("--model-config", "model_config_path", "architecture of an official checkpoint"),
        Flag("--random-init", "random_init", "re-initialise the weights: the no-pretraining baseline", const=True),
    ),
    "data": (
        Flag("--dataset", "dataset", f"KIND:PATH, KIND one of {DATASET_KINDS}", parse=dataset_spec),
        Flag("--variant", "dataset.variant", "ScanObjectNN variant", choices=("obj_bg", "obj_only", "pb_t50_rs")),
        Flag("--lvis-shot", "dataset.lvis_shot", "Objaverse-LVIS K-shot split (default 10)", type=int),
        Flag("--lvis-fold", "dataset.lvis_fold", "Objaverse-LVIS split seed (default 0)", type=int),
        Flag("--label-key", "dataset.label_key", "shard metadata key of the class (default label)"),
        Flag("--test-fraction", "dataset.test_fraction", "hold-out share for shards without a test split (default 0.3)",
             type=float),
        Flag("--max-points", "dataset.max_points", "cap every cloud at this many points (seeded uniform subsample)",
             type=int),
        Flag("--fewshot-path", "fewshot_path", "ModelNetFewshot folder or zip"),
        Flag("--way", "fewshot.way", "few-shot N (default 5)", type=int),
        Flag("--shot", "fewshot.shot", "few-shot K (default 10)", type=int),
        Flag("--folds", "fewshot.folds", "few-shot folds (default 0..9)", type=int, nargs="+"),
    ),
    "protocol": (
        Flag("--protocol", "protocol", choices=PROTOCOLS),
        Flag("--seeds", "seeds", "runs with seeds 0..N-1 (default 1)", type=int),
        Flag("--device", "device", "cpu (default), cuda, cuda:1, ..."),
        Flag("--epochs", "epochs", "total epochs of a trained-head protocol (reference: 150; partseg 300)", type=int),
        Flag("--batch-size", "batch_size", type=int),
        Flag("--voting", "voting", "test-time votes (trained heads only; default 1 = none)", type=int),
        Flag("--eval-every", "eval_every", "also test every N epochs", type=int),
        Flag("--knn-k", "knn_k", type=int),
        Flag("--svm-c", "svm_c", type=float),
        Flag("--num-points", "input.num_points", type=int),
        Flag("--num-patches", "input.num_patches", type=int),
        Flag("--patch-size", "input.patch_size", type=int),
    ),
    "output": (
        Flag("--report", "report", "JSON report path (default evaluation.json)"),
        Flag("--no-mlflow", "mlflow.enabled", const=False),
        Flag("--tracking-uri", "mlflow.tracking_uri"),
        Flag("--experiment", "mlflow.experiment"),
    ),
}


def yaml_value(value: Any) -> str:
    """`value` written so that an override reads it back as itself (a path like `123` or `on` stays a string)."""
    text = value if isinstance(value, str) else json.dumps(value)
    if isinstance(value, float) and "e" in text and "." not in text:
        text = text.replace("e", ".0e")  # YAML 1.1 reads 1e-07 as a string, 1.0e-07 as a float
    try:
        if yaml.safe_load(text) == value:
            return text
    except yaml.YAMLError:
        pass
    return json.dumps(value)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m launch.evaluate", description=__doc__.splitlines()[0])
    p.add_argument("--config", help="YAML evaluation config (keys as in launch.evaluation.run.EvalConfig)")
    add_print_config(p)
    for title, flags in FLAGS.items():
        group = p.add_argument_group(title)
        for flag in flags:
            flag.add_to(group)
    return p


def flag_overrides(args: argparse.Namespace) -> list[str]:
    """The flags given, as `key=value` overrides (absent flags leave the YAML or the defaults alone)."""
    return [item for flags in FLAGS.values() for flag in flags if getattr(args, flag.key) is not None
            for item in flag.overrides(getattr(args, flag.key))]


def _summary(report: dict) -> str:
    if report["protocol"] == "partseg":
        inst, cls = report["instance_miou"], report["class_miou"]
        return (f"partseg: instance mIoU {100 * inst['mean']:.2f} +- {100 * inst['std']:.2f}, class mIoU "
                f"{100 * cls['mean']:.2f} +- {100 * cls['std']:.2f} over {inst['n']} run(s)")
    acc, mca = report["accuracy"], report["mean_class_accuracy"]
    return (f"{report['protocol']}: accuracy {100 * acc['mean']:.2f} +- {100 * acc['std']:.2f} "
            f"(mean class {100 * mca['mean']:.2f} +- {100 * mca['std']:.2f}) over {acc['n']} run(s)")


def _evaluate(argv: list[str] | None) -> int:
    args = _parser().parse_args(argv)
    cfg = load_eval_config(args.config, flag_overrides(args))
    if args.print_config:
        print_config(cfg)
        return 0
    report, _ = run_evaluation(cfg)
    print(_summary(report))
    print(f"report: {cfg.report}" + (f" (MLflow run {report['mlflow_run_id']})" if "mlflow_run_id" in report else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(lambda: _evaluate(argv), errors=ERRORS)


if __name__ == "__main__":
    sys.exit(main())
