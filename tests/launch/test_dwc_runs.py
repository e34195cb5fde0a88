"""Distillation with Contrast through the real job with every backbone: it trains, resumes to the same numbers,
exports, and the export is scored by `launch.evaluate`."""

from __future__ import annotations

import json

import pytest
import torch
from mlflow import MlflowClient
from safetensors.torch import load_file

from launch.evaluate import main as evaluate
from model.dgcnn import DGCNN
from model.encoder import PointEncoder
from model.export import load_encoder
from model.pointnet import PointNet
from tests.launch.conftest import launch, python_pretrain, small_run
from tests.launch.test_pretrain import history, mlflow_uri, run_id_of

pytestmark = pytest.mark.slow  # DeepSpeed training in subprocesses

SMALL_BACKBONES = {  # narrow versions of the published layers, so a CPU step takes a second
    "vit": ([], PointEncoder),
    "pointnet": (["model.pointnet.widths=[16,32,64]"], PointNet),
    "dgcnn": (["model.dgcnn.k=8", "model.dgcnn.edge_widths=[16,16,32]", "model.dgcnn.global_dim=64"], DGCNN),
}


@pytest.mark.parametrize("backbone", list(SMALL_BACKBONES))
def test_dwc_trains_resumes_exactly_exports_and_is_evaluated(pretrain_shards, tmp_path, backbone, capsys):
    extra, cls = SMALL_BACKBONES[backbone]
    model = ["model.method=dwc", f"model.backbone={backbone}", "model.loss.contrast.weight=0.1", *extra]
    whole = launch(python_pretrain(*small_run(pretrain_shards, tmp_path / "whole", *model, "train.max_steps=6")),
                   tmp_path)
    assert whole.returncode == 0, whole.output[-3000:]
    split = tmp_path / "split"
    first = launch(python_pretrain("--resume", "latest", *small_run(pretrain_shards, split, *model,
                                                                    "train.max_steps=3")), tmp_path)
    assert first.returncode == 0, first.output[-3000:]
    resumed = launch(python_pretrain("--resume", "latest", *small_run(pretrain_shards, split, *model,
                                                                      "train.max_steps=6")), tmp_path)
    assert resumed.returncode == 0 and "resumed from" in resumed.output, resumed.output[-3000:]

    client = MlflowClient(mlflow_uri(tmp_path))
    a, b = run_id_of(whole.output), run_id_of(resumed.output)
    for key in ("loss/total", "loss/cls", "loss/contrast", "targets/cls/marginal_entropy"):
        expected, got = history(client, a, key), history(client, b, key)
        assert sorted(expected) == sorted(got) == list(range(1, 7)), key
        assert got == expected, key
    final_a = load_file(str(tmp_path / "whole" / "export" / "encoder.safetensors"))
    final_b = load_file(str(split / "export" / "encoder.safetensors"))
    assert final_a.keys() == final_b.keys() and all(torch.equal(final_a[k], final_b[k]) for k in final_a)

    encoder, cfg, meta = load_encoder(split / "export")
    assert isinstance(encoder, cls) and cfg.method == "dwc" and meta["step"] == 6
    report_path = tmp_path / "svm.json"
    code = evaluate(["--encoder", str(split / "export"), "--dataset", f"shards:{pretrain_shards}",
                     "--test-fraction", "0.34", "--protocol", "svm", "--num-points", "256", "--num-patches", "16",
                     "--patch-size", "16", "--no-mlflow", "--report", str(report_path)])
    assert code == 0, capsys.readouterr().err
    report = json.loads(report_path.read_text())
    assert report["config"]["protocol"]["pooling"] == list(encoder.feature_pooling)
    assert 1 / 16 < report["accuracy"]["mean"] <= 1.0
