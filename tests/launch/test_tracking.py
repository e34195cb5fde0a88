"""What reaches MLflow from a pretraining and an evaluation run: no password inside a URL, in params, tags,
config artifacts or the report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from mlflow import MlflowClient

from launch.evaluation.protocols import RunResult
from launch.evaluation.report import build_report, log_report, write_report
from launch.training import run_log
from launch.training.config import load_pretrain_config
from launch.training.distributed import DistEnv
from launch.training.run_log import RunLog
from pipeline.manifest import Manifest

DEMO = "configs/pretrain/demo.yaml"
POSTGRES = "postgresql://user:PASS@db:5432/mlflow"
MINIO = "https://user:PASS@minio:9000"
BUCKET = "s3://KEY:PASS@bucket/shards"


def logged_text(uri: str, run_id: str, tmp_path: Path) -> str:
    """Every param, tag and text artifact of the run, as one string."""
    client = MlflowClient(uri)
    data = client.get_run(run_id).data
    artifacts = Path(client.download_artifacts(run_id, "", str(tmp_path / run_id)))
    files = [f for f in artifacts.rglob("*") if f.is_file()]
    return "\n".join([*data.params.values(), *data.tags.values(), *(f.read_text() for f in files)])


def test_no_password_in_a_url_reaches_mlflow_or_the_report(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setattr(run_log, "tracking_uri", lambda configured, output_dir: uri)  # no Postgres here
    cfg = load_pretrain_config(DEMO, [f"output_dir={tmp_path}", f"mlflow.tracking_uri={POSTGRES}",
                                      "mlflow.system_metrics=false", f"data.datasets.0.url={BUCKET}",
                                      f"data.datasets.0.storage_options.endpoint_url={MINIO}"])
    manifest = Manifest(f"{BUCKET}/manifest.json", (), "digest", None)
    log = RunLog(cfg, DistEnv(0, 1, 0, 1, torch.device("cpu")), [manifest], {}, {"steps": "1"}, None, 0)
    log.tracker.set_tags({"data": BUCKET})
    log.finish("FINISHED")
    pretrain = logged_text(uri, log.run_id, tmp_path)
    assert "PASS" not in pretrain
    params = MlflowClient(uri).get_run(log.run_id).data.params
    assert params["mlflow.tracking_uri"] == "postgresql://***@db:5432/mlflow"
    assert params["data.datasets.0.storage_options.endpoint_url"] == "https://***@minio:9000"
    assert "s3://***@bucket/shards/manifest.json" in pretrain
    assert MlflowClient(uri).get_run(log.run_id).data.tags["data"] == "s3://***@bucket/shards"

    run = RunResult(seed=0, accuracy=1.0, mean_class_accuracy=1.0, y_true=np.zeros(2, int),
                    y_pred=np.zeros(2, int))
    job = {"job": {"mlflow": {"tracking_uri": POSTGRES}}}
    dataset = {"kind": "shards", "path": BUCKET}
    report = build_report("svm", 1, [run], ("a", "b"), dataset, {"source": "export"}, job)
    run_id = log_report(report, uri)
    assert "PASS" not in logged_text(uri, run_id, tmp_path)
    assert "PASS" not in write_report(report, tmp_path / "svm.json").read_text()
    assert json.loads((tmp_path / "svm.json").read_text())["dataset"]["path"] == "s3://***@bucket/shards"
