"""Launch fixtures: real shards from the sharding job and a runner for the real training entry points."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from sharding.shard_corpus import main as shard_corpus
from tests.conftest import ROOT, free_port

PRETRAIN = str(ROOT / "launch" / "pretrain.py")
DEMO = str(ROOT / "configs" / "pretrain" / "demo.yaml")


@pytest.fixture(scope="session")
def pretrain_shards(tmp_path_factory, local_ray) -> Path:
    """48 synthetic shapes (4,096 points each) in 3 shards of 16."""
    out = tmp_path_factory.mktemp("launch") / "shards"
    assert shard_corpus(["--source", "synthetic:48", "--output", str(out), "--shard-size", "16",
                         "--num-points", "4096", "--no-progress"]) == 0
    return out


def small_run(shards: Path, out: Path, *extra: str) -> list[str]:
    """Overrides that make demo.yaml a few-second CPU run on the test shards (no monitor probes)."""
    return [f"data.datasets.0.url={shards}", f"output_dir={out}", "data.num_workers=0", "train.global_batch=8",
            "train.epochs=4", "optim.warmup_epochs=1", "train.log_every=1",
            "mlflow.system_metrics=false", "checkpoint.every_steps=2", "monitor.sets=[]", *extra]


@dataclass
class Launched:
    returncode: int
    output: str


def job_env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1",
               MLFLOW_TRACKING_URI=f"sqlite:///{tmp / 'mlflow.db'}")
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    return env


def launch(cmd: list[str], tmp: Path, timeout: float = 300, env: dict[str, str] | None = None) -> Launched:
    proc = subprocess.run(cmd, cwd=ROOT, env=env or job_env(tmp), capture_output=True, text=True, timeout=timeout)
    return Launched(proc.returncode, proc.stdout + proc.stderr)


def python_pretrain(*args: str) -> list[str]:
    return [sys.executable, PRETRAIN, "--config", DEMO, *args]


def launcher(name: str) -> str:
    """A launcher script of this interpreter's environment (deepspeed, torchrun)."""
    return str(Path(sys.executable).parent / name)


__all__ = ["DEMO", "Launched", "free_port", "job_env", "launch", "launcher", "python_pretrain", "small_run"]
