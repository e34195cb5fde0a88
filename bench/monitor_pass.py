"""What a downstream probe during pretraining costs: one monitor pass of a model on a labelled set.

    python -m bench.monitor_pass --model configs/model/asymdsd_s.yaml --shapes 1000 --device cpu

The set is `--shapes` synthetic ellipsoid surfaces (`bench.synthetic`) of `--points` points, labelled
by size (ten balanced classes of their spatial variance, so the SVM fits a learnable task), split 70/30; the encoder is the model's, randomly initialised
(the cost does not depend on the weights). Measured, in one process (one rank):

* `monitor`: `launch.training.monitor.Monitor` as the trainer runs it, SVM and k-NN: the seconds the
  training loop waits (the feature pass, `probe`) and the seconds until both scores are in (`results`,
  scored on the monitor's thread);
* `baseline`: the same two protocols through the evaluation job's functions (`svm_run`, `knn_run`),
  which extract the features once per protocol.

The ratio baseline / monitor is the saving of extracting once and scoring both; the waited share is
what a pass takes out of training.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from bench.common import add_json_option, benchmark_main
from bench.synthetic import ellipsoid_crops
from launch.evaluation.data import LabelledSet, TrainTest
from launch.evaluation.encoders import random_encoder
from launch.evaluation.features import InputSpec
from launch.evaluation.protocols import FeatureConfig, knn_run, svm_run
from launch.training.config import MonitorConfig
from launch.training.distributed import DistEnv
from launch.training.monitor import Monitor, ProbeSet
from model.config import load_model_config

CLASSES = 10


def labelled_ellipsoids(shapes: int, points: int) -> TrainTest:
    crops = ellipsoid_crops(shapes, 1, points, torch.Generator().manual_seed(0))
    clouds = crops.points[:, 0].numpy()
    size = clouds.var(axis=1).sum(axis=1)
    labels = (np.argsort(np.argsort(size)) * CLASSES // shapes).astype(np.int64)
    order = np.random.default_rng(0).permutation(shapes)  # so that a cut by index keeps every class on both sides
    clouds, labels = clouds[order], labels[order]
    names = tuple(f"class_{i}" for i in range(CLASSES))
    whole = LabelledSet("ellipsoids", clouds, np.full(shapes, points, dtype=np.int64), labels, names)
    cut = int(0.7 * shapes)
    return TrainTest(whole.subset(np.arange(cut)), whole.subset(np.arange(cut, shapes)), {})


def measure(args: argparse.Namespace) -> dict:
    import sklearn.svm  # noqa: F401  imported before the clocks: the first protocol to run would pay for it

    torch.set_num_threads(args.threads or torch.get_num_threads())
    model_cfg = load_model_config(args.model)
    device = torch.device(args.device)
    encoder = random_encoder(model_cfg, 0, device)
    data = labelled_ellipsoids(args.shapes, args.points)
    spec = InputSpec(num_points=args.points, num_patches=model_cfg.patchify.global_patches,
                     patch_size=model_cfg.patchify.patch_size)
    cfg = MonitorConfig(batch_size=args.batch_size)
    monitor = Monitor(cfg, [ProbeSet("ellipsoids", data, spec)], DistEnv(0, 1, 0, 1, device), 1, 1, 0)
    start = time.perf_counter()
    waited = monitor.probe(encoder, 0, None)
    (result,) = monitor.results(wait=True)
    total = time.perf_counter() - start
    monitor.close()

    features = FeatureConfig(input=spec, batch_size=args.batch_size)
    start = time.perf_counter()
    svm = svm_run(encoder, data.train, data.test, device, 0, features)
    knn = knn_run(encoder, data.train, data.test, device, 0, features)
    baseline = time.perf_counter() - start
    return {
        "model": model_cfg.name, "device": str(device), "threads": torch.get_num_threads(), "shapes": args.shapes,
        "points": args.points, "monitor_waited_s": round(waited, 2), "monitor_total_s": round(total, 2),
        "baseline_s": round(baseline, 2), "ratio_baseline_over_monitor": round(baseline / total, 2),
        "accuracy": {"monitor": result.accuracy, "baseline": {"svm": svm.accuracy, "knn": knn.accuracy}},
    }


def show(result: dict) -> None:
    print(f"{result['model']} on {result['shapes']} shapes of {result['points']} points, {result['device']}, "
          f"{result['threads']} threads: monitor pass {result['monitor_total_s']:.1f} s "
          f"(training waits {result['monitor_waited_s']:.1f} s), evaluation functions {result['baseline_s']:.1f} s "
          f"(x{result['ratio_baseline_over_monitor']:.2f})")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.monitor_pass", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="configs/model/asymdsd_s.yaml")
    p.add_argument("--shapes", type=int, default=1000)
    p.add_argument("--points", type=int, default=1024)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    add_json_option(p)
    return p.parse_args(argv)


main = benchmark_main(parse_args, measure, show)

if __name__ == "__main__":
    raise SystemExit(main())
