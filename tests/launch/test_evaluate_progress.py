"""A trained-head evaluation logs its per-epoch history (training loss, test accuracy where tested) to
MLflow with the epoch as step, one series per seed, and its progress bars stay out of captured output."""

from __future__ import annotations

import json

from mlflow import MlflowClient

from launch.evaluate import main
from model.export import export_encoder
from tests.launch.eval_fixtures import tiny_encoder
from tests.launch.test_evaluate_objaverse_lvis import write_lvis_store


def test_linear_probe_logs_loss_and_accuracy_per_epoch_and_seed(tmp_path, capsys):
    write_lvis_store(tmp_path / "Objaverse.zarr", points=64)
    encoder, cfg = tiny_encoder(0)
    export = export_encoder(encoder, cfg, tmp_path / "export", {})
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    report_path = tmp_path / "linear.json"
    code = main(["--encoder", str(export), "--dataset", f"objaverse_lvis:{tmp_path / 'Objaverse.zarr'}",
                 "--lvis-shot", "2", "--protocol", "linear", "--epochs", "2", "--eval-every", "1", "--seeds", "2",
                 "--num-points", "64", "--num-patches", "8", "--patch-size", "8", "--tracking-uri", uri,
                 "--report", str(report_path)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "epoch" not in err and "features" not in err  # no bars when output is not a terminal
    report = json.loads(report_path.read_text())
    assert report["dataset"]["kind"] == "objaverse_lvis" and report["dataset"]["test_group"] == "lvis_test_s2f0"
    client = MlflowClient(uri)
    for run in report["runs"]:
        assert [r["epoch"] for r in run["history"]] == [1, 2]
        for metric, key in (("train_loss", "loss"), ("test_accuracy", "accuracy")):
            series = client.get_metric_history(report["mlflow_run_id"], f"linear/seed{run['seed']}/{metric}")
            assert [(m.step, m.value) for m in sorted(series, key=lambda m: m.step)] == \
                [(r["epoch"], r[key]) for r in run["history"]]
    assert report["runs"][1]["history"][-1]["accuracy"] == report["runs"][1]["accuracy"]
