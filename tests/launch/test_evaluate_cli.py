"""`python -m launch.evaluate` end to end: real shards, an export directory or an official checkpoint,
the JSON report, and an MLflow (sqlite) run linked to the pretraining run."""

from __future__ import annotations

import json

import pytest
import yaml
from mlflow import MlflowClient

from launch.evaluate import main
from launch.evaluation.official import official_state_dict
from launch.export import export_encoder
from tests.launch.eval_fixtures import TINY, tiny_encoder
from tests.launch.test_evaluate_official import write_lightning_ckpt

SMALL = ["--num-points", "256", "--num-patches", "16", "--patch-size", "16"]


@pytest.fixture
def pretrain_run(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    run = client.create_run(client.create_experiment("pretrain"), run_name="pretrain")
    return uri, run.info.run_id


def test_svm_from_an_export_logs_a_run_linked_to_pretraining(tmp_path, pretrain_shards, pretrain_run, capsys):
    uri, pretrain_id = pretrain_run
    encoder, cfg = tiny_encoder(0)
    export = export_encoder(encoder, cfg, tmp_path / "export", {"mlflow_run_id": pretrain_id, "step": 40})
    report_path = tmp_path / "out" / "svm.json"
    code = main(["--encoder", str(export), "--dataset", f"shards:{pretrain_shards}", "--test-fraction", "0.34",
                 "--protocol", "svm", "--seeds", "2", *SMALL, "--report", str(report_path), "--tracking-uri", uri])
    assert code == 0, capsys.readouterr().err
    assert "svm: accuracy" in capsys.readouterr().out
    report = json.loads(report_path.read_text())
    assert report["protocol"] == "svm" and report["accuracy"]["n"] == 2
    assert [len(r["y_true"]) for r in report["runs"]] == [16, 16] and len(report["class_names"]) == 16
    assert report["encoder"]["mlflow_run_id"] == pretrain_id and report["encoder"]["step"] == 40
    assert report["config"]["protocol"]["pooling"] == ["cls", "mean"]
    run = MlflowClient(uri).get_run(report["mlflow_run_id"])
    assert run.data.tags["pretrain_run_id"] == pretrain_id and run.data.tags["mlflow.parentRunId"] == pretrain_id
    assert run.data.metrics["svm/accuracy_mean"] == pytest.approx(report["accuracy"]["mean"])
    assert run.data.params["config.protocol.svm_c"] == "1.0" and run.info.status == "FINISHED"
    artifacts = [a.path for a in MlflowClient(uri).list_artifacts(run.info.run_id, "evaluation")]
    assert artifacts == ["evaluation/svm.json"]


def test_yaml_job_on_an_official_checkpoint_with_voting(tmp_path, pretrain_shards, capsys):
    encoder, cfg = tiny_encoder(0)
    ckpt = write_lightning_ckpt(tmp_path / "AsymDSD-tiny.ckpt", official_state_dict(encoder, cfg))
    job = {"official_ckpt": str(ckpt), "model_config_path": str(TINY), "protocol": "linear",
           "dataset": {"kind": "shards", "path": str(pretrain_shards), "test_fraction": 0.34},
           "epochs": 2, "voting": 2, "report": str(tmp_path / "linear.json"), "mlflow": {"enabled": False}}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    assert main(["--config", str(tmp_path / "job.yaml"), *SMALL]) == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "linear.json").read_text())
    assert report["protocol"] == "linear_vote2" and report["voting"] == 2
    assert report["encoder"]["source"] == "official_checkpoint" and report["encoder"]["epoch"] == 299
    assert [p["epochs"] for p in report["config"]["protocol"]["phases"]] == [2]
    assert "mlflow_run_id" not in report


@pytest.mark.parametrize("args, message", [
    (["--encoder", "a", "--official-ckpt", "b", "--protocol", "svm", "--dataset", "shards:x"], "exactly one"),
    (["--encoder", "a", "--protocol", "svm", "--dataset", "mnist:x"], "dataset.kind"),
    (["--encoder", "a", "--protocol", "svm", "--dataset", "shards"], "KIND:PATH"),
    (["--encoder", "a", "--protocol", "svm", "--dataset", "shards:x", "--voting", "3"], "voting applies"),
    (["--encoder", "a", "--protocol", "fewshot"], "fewshot_path"),
])
def test_bad_jobs_fail_before_any_work_with_the_reason(args, message, capsys):
    assert main(args) == 2
    assert message in capsys.readouterr().err


def test_missing_export_directory_is_reported(tmp_path, capsys):
    assert main(["--encoder", str(tmp_path / "nope"), "--protocol", "svm", "--dataset", "shards:x", "--no-mlflow"]) == 2
    assert "encoder.safetensors is missing" in capsys.readouterr().err
