"""MLflow logging for the pretraining job: global rank 0 logs, every node reports its system metrics.

DeepSpeed has no MLflow monitor, so the job logs itself. Only global rank 0 creates or reopens the
run and writes params, metrics and artifacts; ranks average their scalars with an all-reduce before
that. The run id goes into every checkpoint, so a resumed job continues the same run. Local rank 0
of *every* node attaches a system-metrics monitor to that run with its own node id (MLflow's
multi-node system metrics), so one run shows each node's CPU, memory and GPU use.

Secrets never reach MLflow: `redact` replaces credentials in the config tree (fsspec storage
options and any key that names a secret) before it becomes params or artifacts, and `Tracker` takes
the userinfo out of every URL in the params, tags and text artifacts it writes.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml

from configuration.redact import redact_urls

MAX_PARAM_CHARS = 6000


def flatten(tree: Any, prefix: str = "") -> dict[str, str]:
    """Dotted keys to strings, as MLflow params (long values are cut; the full config is an artifact)."""
    if isinstance(tree, dict):
        out: dict[str, str] = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    if isinstance(tree, list) and any(isinstance(v, (dict, list)) for v in tree):
        out = {}
        for i, value in enumerate(tree):
            out.update(flatten(value, f"{prefix}{i}."))
        return out
    return {prefix[:-1]: str(tree)[:MAX_PARAM_CHARS]}


def tracking_uri(configured: str | None, output_dir: str | os.PathLike) -> str:
    """The configured URI, else $MLFLOW_TRACKING_URI, else a sqlite file in the output directory."""
    if configured:
        return configured
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{Path(output_dir).resolve() / 'mlflow.db'}"


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def local_artifact_root(uri: str) -> str | None:
    """Artifacts of a sqlite store go next to the database, not into ./mlruns of whatever the cwd is."""
    if not uri.startswith("sqlite:///"):
        return None  # a tracking server decides (e.g. --artifacts-destination s3://...)
    return (Path(uri[len("sqlite:///"):]).resolve().parent / "mlartifacts").as_uri()


class Tracker:
    """One MLflow run, written by global rank 0, with no URL userinfo in its params, tags or text."""

    def __init__(self, uri: str, experiment: str, run_id: str | None, run_name: str | None,
                 tags: dict[str, str]) -> None:
        from mlflow import MlflowClient

        self.uri = uri
        self.client = MlflowClient(uri)
        if run_id is not None:
            self.run_id = self.client.get_run(run_id).info.run_id  # raises if the store lost the run
            self.client.update_run(self.run_id, status="RUNNING")
            self.resumed = True
        else:
            exp = self.client.get_experiment_by_name(experiment)
            exp_id = exp.experiment_id if exp is not None else self.client.create_experiment(
                experiment, artifact_location=local_artifact_root(uri))
            public = {k: redact_urls(v) for k, v in tags.items()}
            self.run_id = self.client.create_run(exp_id, run_name=run_name, tags=public).info.run_id
            self.resumed = False

    def log_params(self, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k, redact_urls(v)) for k, v in sorted(params.items())]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i:i + 100])

    def set_tags(self, tags: dict[str, str]) -> None:
        for k, v in tags.items():
            self.client.set_tag(self.run_id, k, redact_urls(v))

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in sorted(metrics.items())]
        for i in range(0, len(items), 500):
            self.client.log_batch(self.run_id, metrics=items[i:i + 500])

    def log_series(self, points: list[tuple[str, float, int]]) -> None:
        """Many (key, value, step) points in a few batched calls: a metric's whole history at once."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v, step in points]
        for i in range(0, len(items), 500):
            self.client.log_batch(self.run_id, metrics=items[i:i + 500])

    def log_text(self, text: str, artifact_path: str) -> None:
        self.client.log_text(self.run_id, redact_urls(text), artifact_path)

    def log_dict(self, data: Any, artifact_path: str) -> None:
        if artifact_path.endswith((".yaml", ".yml")):
            self.log_text(yaml.safe_dump(data, sort_keys=False), artifact_path)
        else:
            self.log_text(json.dumps(data, indent=2, sort_keys=True) + "\n", artifact_path)

    def log_file(self, path: str | os.PathLike, artifact_dir: str) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_dir)

    def log_dir(self, path: str | os.PathLike, artifact_dir: str) -> None:
        self.client.log_artifacts(self.run_id, str(path), artifact_dir)

    def finish(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status=status)


class NodeSystemMetrics:
    """MLflow's system-metrics sampler for this node, attached to the job's run."""

    def __init__(self, uri: str, run_id: str, node_rank: int, interval_s: float) -> None:
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        self.monitor = SystemMetricsMonitor(run_id, sampling_interval=interval_s, node_id=f"node{node_rank}",
                                            tracking_uri=uri, resume_logging=True)
        self.monitor.start()

    def stop(self) -> None:
        self.monitor.finish()

