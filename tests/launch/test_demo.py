"""`make demo` end to end, at a smaller size: shards, pretraining, SVM and part segmentation against random init,
pictures, MLflow."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from mlflow import MlflowClient

from tests.launch.conftest import job_env, launch

PRETRAIN_PICTURES = ["shape0_crops", "shape0_masks", "shape0_attention", "loss_curves", "tsne_comparison"]
EVAL_PICTURES = ["tsne", "confusion"]  # on each evaluation run


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path, local_ray):
    out = tmp_path / "demo"
    env = job_env(tmp_path)
    env.pop("MLFLOW_TRACKING_URI")  # the demo names its own store
    result = launch([sys.executable, "-m", "launch.demo", "--out", str(out), "--shapes", "64", "--test-shapes", "32",
                     "--epochs", "1", "--shard-size", "32", "--num-points", "4096", "--partseg-shapes", "32",
                     "--partseg-test-shapes", "16", "--partseg-epochs", "1"], tmp_path, env=env)
    assert result.returncode == 0, result.output[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_shapes"] == 64 and summary["num_shards"] == 3 and summary["steps"] == 2  # 64 / 32
    for key in ("svm_acc_pretrained", "svm_acc_random_init"):
        assert 0.0 <= summary[key] <= 1.0
    assert set(summary["partseg"]) == {"pretrained", "random_init"}
    assert all(0.0 < s["instance_miou"] <= 1.0 and 0.0 < s["class_miou"] <= 1.0 for s in summary["partseg"].values())
    assert summary["wall_seconds"] > 0 and "mlflow ui --backend-store-uri" in result.output
    assert "/runs?workflowType=machine_learning" in result.output  # MLflow 3's runs table, not its GenAI view
    # 2 steps, probed every 4 epochs (8 steps): at the start and at the last step
    assert sorted(summary["monitor"]["svm"]) == sorted(summary["monitor"]["knn"]) == ["0", "2"]
    assert all(0.0 <= a <= 1.0 for a in summary["monitor"]["svm"].values())

    client = MlflowClient(summary["mlflow_tracking_uri"])
    run = client.get_run(summary["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == "demo" and sorted(run.data.params)
    assert run.data.metrics["monitor/synthetic/svm"] == summary["monitor"]["svm"]["2"]
    logged = {f.path for f in client.list_artifacts(run.info.run_id, "pictures")}
    assert logged == {f"pictures/{name}.png" for name in PRETRAIN_PICTURES} | {"pictures/shape16_crops.png",
        "pictures/shape16_masks.png", "pictures/shape16_attention.png"}
    assert "encoder/signature.json" in {f.path for f in client.list_artifacts(run.info.run_id, "encoder")}
    runs = client.search_runs([run.info.experiment_id], f"tags.pretrain_run_id = '{run.info.run_id}'")
    assert sorted(r.info.run_name for r in runs) == ["partseg-pretrained", "partseg-random_init", "svm-pretrained",
                                                     "svm-random_init"]
    accuracy = {r.info.run_name: r.data.metrics["svm/accuracy_mean"] for r in runs if r.info.run_name[:3] == "svm"}
    assert accuracy["svm-pretrained"] == summary["svm_acc_pretrained"]
    for r in (r for r in runs if r.info.run_name.startswith("partseg-")):
        name = r.info.run_name.removeprefix("partseg-")
        assert r.data.metrics["partseg/instance_miou_mean"] == summary["partseg"][name]["instance_miou"]
        pictures = {f.path for f in client.list_artifacts(r.info.run_id, "pictures")}
        assert pictures == {f"pictures/partseg_{name}.png"}
        assert (out / "pictures" / f"partseg_{name}.png").stat().st_size > 10_000
    evals = [r for r in runs if r.info.run_name.startswith("svm-")]
    for r in evals:
        name = r.info.run_name.removeprefix("svm-")
        pictures = {f.path for f in client.list_artifacts(r.info.run_id, "pictures")}
        assert pictures == {f"pictures/{kind}_{name}.png" for kind in EVAL_PICTURES}, pictures
        for kind in EVAL_PICTURES:
            assert (out / "pictures" / f"{kind}_{name}.png").stat().st_size > 10_000
    for name in PRETRAIN_PICTURES:
        assert (out / "pictures" / f"{name}.png").stat().st_size > 10_000, name


def test_the_part_segmentation_subsets_take_the_classes_in_turns():
    from launch.demo import balanced_first

    labels = np.array([2, 2, 0, 1, 0, 2, 1, 1, 0])
    assert balanced_first(labels, 5).tolist() == [2, 3, 0, 4, 6]  # 0, 1, 2, then the second 0 and 1
    assert np.bincount(labels[balanced_first(labels, 6)]).tolist() == [2, 2, 2]
