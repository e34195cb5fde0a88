"""Shared pieces of the evaluation tests: small labelled sets whose classes differ in geometry, a tiny
random encoder, writers for the public file formats (h5 releases, few-shot pickles), and a CLI's
`--help` run without the modules the `train` extra does not install."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np

from launch.evaluation.data import LabelledSet
from launch.evaluation.encoders import random_encoder
from launch.evaluation.features import InputSpec
from model.config import load_model_config
from tests.conftest import ROOT

TINY = ROOT / "configs" / "model" / "tiny.yaml"
CLASSES = ("sphere", "plane", "line")
SMALL_INPUT = InputSpec(num_points=256, num_patches=16, patch_size=16)
NOT_IN_TRAIN_EXTRA = ("trimesh", "ray", "scipy", "webdataset")


def shape_cloud(kind: int, rng: np.random.Generator, n: int = 256) -> np.ndarray:
    """A sphere, a thin plane or a thin line, randomly rotated and scaled (classes a random encoder separates)."""
    if kind == 0:
        pts = rng.normal(size=(n, 3))
        pts /= np.linalg.norm(pts, axis=1, keepdims=True)
    elif kind == 1:
        pts = np.c_[rng.uniform(-1, 1, (n, 2)), rng.normal(0, 0.01, n)]
    else:
        pts = np.c_[rng.uniform(-1, 1, n), rng.normal(0, 0.03, (n, 2))]
    rotation, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    return (pts @ rotation.T * rng.uniform(0.5, 2.0)).astype(np.float32)


def shape_set(per_class: int, seed: int, n: int = 256, name: str = "shapes") -> LabelledSet:
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(CLASSES)), per_class)
    points = np.stack([shape_cloud(int(c), rng, n) for c in labels])
    return LabelledSet(name, points, np.full(len(labels), n), labels, CLASSES)


def shuffled(data: LabelledSet, seed: int = 0) -> LabelledSet:
    """The same clouds with labels permuted: nothing left for a classifier to learn."""
    labels = np.random.default_rng(seed).permutation(data.labels)
    return LabelledSet(data.name, data.points, data.num_points, labels, data.class_names)


def tiny_encoder(seed: int = 0):
    cfg = load_model_config(TINY)
    return random_encoder(cfg, seed), cfg


def write_h5(path: Path, points: np.ndarray, labels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f["data"] = points.astype(np.float32)
        f["label"] = labels.reshape(-1, 1).astype(np.uint8)


def write_fewshot_folds(root: Path, way: int, shot: int, folds: int, test_per_class: int, n: int = 256) -> Path:
    """Point-BERT style folds `<root>/<way>way_<shot>shot/<fold>.pkl` of (points (n, 6), label, label) rows.

    The stored clouds are Y-up (the loader swaps y and z), so each class is drawn Z-up and swapped here.
    """
    rng = np.random.default_rng(0)
    folder = root / f"{way}way_{shot}shot"
    folder.mkdir(parents=True, exist_ok=True)
    for fold in range(folds):
        doc = {}
        for split, count in (("train", shot), ("test", test_per_class)):
            rows = []
            for label in range(way):
                for _ in range(count):
                    pts = shape_cloud(label % len(CLASSES), rng, n)[:, [0, 2, 1]]
                    rows.append((np.c_[pts, np.zeros_like(pts)], label, np.int32(label)))
            doc[split] = rows
        (folder / f"{fold}.pkl").write_bytes(pickle.dumps(doc, protocol=2))
    return root


def help_without(module: str, blocked: tuple[str, ...] = NOT_IN_TRAIN_EXTRA) -> subprocess.CompletedProcess:
    """`python -m <module> --help` in a fresh interpreter in which every module of `blocked` fails to import."""
    code = (f"import runpy, sys\nfor name in {list(blocked)!r}:\n    sys.modules[name] = None\n"
            f"sys.argv = [{module!r}, '--help']\nrunpy.run_module({module!r}, run_name='__main__')\n")
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
