"""What the pipeline and evaluation import from sharding loads with their own extras: no trimesh, Ray,
SciPy, WebDataset or tqdm (the sharding extra)."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT

SHARDING_ONLY = ("trimesh", "ray", "scipy", "webdataset", "tqdm")
LIGHT_MODULES = ("sharding.layouts", "sharding.manifest", "sharding.containers", "sharding.sampling",
                 "pipeline.manifest", "launch.evaluation.data")

# A fresh interpreter in which importing any SHARDING_ONLY package fails, as where it is not installed.
PROGRAM = f"""
import importlib, sys
for name in {SHARDING_ONLY!r}:
    sys.modules[name] = None
for module in {LIGHT_MODULES!r}:
    importlib.import_module(module)
"""


def test_layouts_manifest_and_containers_import_without_the_sharding_extra():
    proc = subprocess.run([sys.executable, "-c", PROGRAM], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
