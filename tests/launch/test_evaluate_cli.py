"""`python -m launch.evaluate`: end to end on real shards from an export directory or an official
checkpoint (the JSON report, an MLflow run linked to the pretraining run), and the config errors,
`--print-config` and `--help` that need no data."""

from __future__ import annotations

import json

import pytest
import yaml
from mlflow import MlflowClient

from launch.evaluate import main
from model.export import export_encoder
from model.official import official_state_dict
from tests.launch.eval_fixtures import TINY, help_without, tiny_encoder
from tests.launch.test_evaluate_official import write_lightning_ckpt

SMALL = ["--num-points", "256", "--num-patches", "16", "--patch-size", "16"]


@pytest.fixture
def pretrain_mlflow_run(tmp_path) -> tuple[str, str]:
    """(tracking URI, run id) of an empty pretraining run in a fresh sqlite store."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    run = client.create_run(client.create_experiment("pretrain"), run_name="pretrain")
    return uri, run.info.run_id


@pytest.mark.slow
def test_svm_from_an_export_logs_a_run_linked_to_pretraining(tmp_path, pretrain_shards, pretrain_mlflow_run, capsys,
                                                             monkeypatch):
    """With no store given, the evaluation run goes into the pretraining run's store, which the export names."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri, pretrain_id = pretrain_mlflow_run
    encoder, cfg = tiny_encoder(0)
    export = export_encoder(encoder, cfg, tmp_path / "export",
                            {"mlflow_run_id": pretrain_id, "mlflow_tracking_uri": uri, "step": 40})
    report_path = tmp_path / "out" / "svm.json"
    code = main(["--encoder", str(export), "--dataset", f"shards:{pretrain_shards}", "--test-fraction", "0.34",
                 "--protocol", "svm", "--seeds", "2", *SMALL, "--report", str(report_path)])
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


@pytest.mark.slow
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


@pytest.mark.parametrize("name, text", [
    ("model.yaml", 'name: !!python/object/apply:os.system ["echo pwned"]\n'),
    ("export.json", '{"step": 40,\n'),
])
def test_a_tampered_export_is_one_error_line_naming_the_file(tmp_path, capfd, name, text):
    encoder, cfg = tiny_encoder(0)
    export = export_encoder(encoder, cfg, tmp_path / "export", {"step": 40})
    (export / name).write_text(text)
    assert main(["--encoder", str(export), "--protocol", "svm", "--dataset", "shards:x", "--no-mlflow"]) == 2
    out, err = capfd.readouterr()
    assert "pwned" not in out + err
    assert err.startswith(f"error: {export / name} is not valid ") and err.count("\n") == 1


def write_job(tmp_path, job: dict):
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    return path


@pytest.mark.parametrize("job, flags, key, suggestion", [
    ({"protocl": "svm"}, [], "protocl: unknown key", "did you mean 'protocol'?"),
    ({"protocol": "svn"}, [], "protocol: Input should be", "did you mean 'svm'?"),
    ({"protocol": "svm", "dataset": {"kind": "shards", "path": "x", "labelkey": "class"}}, [],
     "dataset.labelkey: unknown key", "did you mean 'label_key'?"),
    ({"protocol": "svm"}, ["--dataset", "shard:x"], "dataset.kind: Input should be", "did you mean 'shards'?"),
])
def test_misspelt_keys_and_values_exit_2_naming_the_key_and_a_close_match(tmp_path, capsys, job, flags, key,
                                                                          suggestion):
    assert main(["--config", str(write_job(tmp_path, {"encoder": "e", **job})), *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: invalid evaluation config") and key in err and suggestion in err


def test_print_config_shows_the_yaml_with_the_flags_applied_and_runs_nothing(tmp_path, capsys):
    job = write_job(tmp_path, {"encoder": "runs/x/export", "protocol": "linear", "epochs": 2,
                               "dataset": {"kind": "scanobjectnn", "path": "h5_files.zip"}})
    report = tmp_path / "linear.json"
    assert main(["--config", str(job), "--variant", "obj_bg", "--epochs", "5", "--label-key", "on", "--folds", "0", "3",
                 "--max-points", "1024", "--no-mlflow", "--report", str(report), "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["dataset"] == {"kind": "scanobjectnn", "path": "h5_files.zip", "variant": "obj_bg",
                                  "label_key": "on", "test_fraction": 0.3, "split_seed": 0, "max_points": 1024,
                                  "lvis_shot": 10, "lvis_fold": 0, "storage_options": {}}
    assert printed["epochs"] == 5 and printed["fewshot"]["folds"] == [0, 3] and printed["seeds"] == 1
    assert printed["mlflow"]["enabled"] is False and printed["report"] == str(report)
    assert not report.exists()


@pytest.mark.slow
def test_help_needs_only_the_train_extra():
    done = help_without("launch.evaluate")
    assert done.returncode == 0, done.stderr
    assert "--official-ckpt" in done.stdout and "--print-config" in done.stdout


@pytest.mark.slow
def test_partseg_on_shards_with_synthetic_parts_reports_miou_per_category_and_epoch(tmp_path, pretrain_shards,
                                                                                    capsys):
    encoder, cfg = tiny_encoder(0)
    export = export_encoder(encoder, cfg, tmp_path / "export", {})
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    report_path = tmp_path / "partseg.json"
    code = main(["--encoder", str(export), "--dataset", f"shards:{pretrain_shards}", "--test-fraction", "0.34",
                 "--protocol", "partseg", "--epochs", "2", "--eval-every", "1", "--batch-size", "8",
                 "--max-points", "512", *SMALL, "--report", str(report_path), "--tracking-uri", uri])
    assert code == 0, capsys.readouterr().err
    assert "partseg: instance mIoU" in capsys.readouterr().out
    report = json.loads(report_path.read_text())
    assert report["protocol"] == "partseg" and report["instance_miou"]["n"] == 1
    assert 0.0 < report["instance_miou"]["mean"] <= 1.0 and len(report["category_iou"]) == 16
    assert "mug/handle" in report["part_names"] and report["dataset"]["test_size"] == 16
    assert report["config"]["protocol"]["input"] == {"num_points": 256, "subsample": "random", "num_patches": 16,
                                                     "patch_size": 16}
    client = MlflowClient(uri)
    run = client.get_run(report["mlflow_run_id"])
    assert run.data.metrics["partseg/instance_miou_mean"] == pytest.approx(report["instance_miou"]["mean"])
    assert run.data.metrics["partseg/category_iou/mug_mean"] == pytest.approx(report["category_iou"]["mug"]["mean"])
    curve = client.get_metric_history(run.info.run_id, "partseg/seed0/test_instance_miou")
    assert [m.step for m in curve] == [1, 2] and curve[-1].value == pytest.approx(report["instance_miou"]["mean"])


def test_partseg_refuses_a_dataset_without_part_labels(tmp_path, capsys):
    encoder, cfg = tiny_encoder(0)
    export = export_encoder(encoder, cfg, tmp_path / "export", {})
    code = main(["--encoder", str(export), "--dataset", f"scanobjectnn:{tmp_path}", "--protocol", "partseg",
                 "--no-mlflow", "--report", str(tmp_path / "r.json")])
    assert code == 2
    assert "partseg needs per-point part labels" in capsys.readouterr().err
