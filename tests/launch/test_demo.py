"""`make demo` end to end, at a smaller size: shards, pretraining, SVM against random init, pictures, MLflow."""

from __future__ import annotations

import json
import sys

import pytest
from mlflow import MlflowClient

from tests.launch.conftest import job_env, launch

PICTURES = ["shape0_crops", "shape0_masks", "shape0_attention", "loss_curves", "tsne_pretrained",
            "tsne_random_init", "confusion_pretrained", "confusion_random_init"]


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path, local_ray):
    out = tmp_path / "demo"
    env = job_env(tmp_path)
    env.pop("MLFLOW_TRACKING_URI")  # the demo names its own store
    result = launch([sys.executable, "-m", "launch.demo", "--out", str(out), "--shapes", "64", "--test-shapes", "32",
                     "--epochs", "1", "--shard-size", "32", "--num-points", "4096"], tmp_path, env=env)
    assert result.returncode == 0, result.output[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_shapes"] == 64 and summary["num_shards"] == 3 and summary["steps"] == 2  # 64 / 32
    for key in ("svm_acc_pretrained", "svm_acc_random_init"):
        assert 0.0 <= summary[key] <= 1.0
    assert summary["wall_seconds"] > 0 and "mlflow ui --backend-store-uri" in result.output

    for name in PICTURES:
        assert (out / "pictures" / f"{name}.png").stat().st_size > 10_000, name
    client = MlflowClient(summary["mlflow_tracking_uri"])
    run = client.get_run(summary["mlflow_run_id"])
    assert run.info.status == "FINISHED" and sorted(run.data.params)  # the pretraining run
    logged = {f.path for f in client.list_artifacts(run.info.run_id, "pictures")}
    assert {f"pictures/{name}.png" for name in PICTURES} <= logged
    evals = client.search_runs([run.info.experiment_id], f"tags.pretrain_run_id = '{run.info.run_id}'")
    assert sorted(r.info.run_name for r in evals) == ["svm-pretrained", "svm-random_init"]
    accuracy = {r.info.run_name: r.data.metrics["svm/accuracy_mean"] for r in evals}
    assert accuracy["svm-pretrained"] == summary["svm_acc_pretrained"]
