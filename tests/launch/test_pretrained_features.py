"""`embed` is the evaluation's feature path: the SVM protocol's input and pooling, the same numbers; and
`from_pretrained` reads an export logged to MLflow as the `encoder` artifact."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from mlflow import MlflowClient

from launch.evaluation.data import LabelledSet
from launch.evaluation.encoders import random_encoder
from launch.evaluation.features import extract_features
from launch.evaluation.protocols import default_input
from model.config import load_model_config, model_config_from_dict
from model.export import export_encoder
from model.pretrained import PretrainedEncoder, from_pretrained
from tests.launch.eval_fixtures import TINY, shape_cloud, tiny_encoder


def ragged_set(sizes: list[int]) -> tuple[list[np.ndarray], LabelledSet]:
    """Clouds of the given sizes, and the same clouds zero-padded into a labelled set."""
    rng = np.random.default_rng(0)
    clouds = [shape_cloud(i % 3, rng, n) for i, n in enumerate(sizes)]
    padded = np.zeros((len(sizes), max(sizes), 3), np.float32)
    for row, cloud in zip(padded, clouds):
        row[:len(cloud)] = cloud
    labels = np.arange(len(sizes)) % 3
    return clouds, LabelledSet("ragged", padded, np.array(sizes), labels, ("sphere", "plane", "line"))


def test_embed_equals_the_svm_protocols_features_before_normalisation():
    encoder, cfg = tiny_encoder(0)
    wrapped = PretrainedEncoder(encoder, cfg)
    assert wrapped.spec == default_input(cfg, "shards") and wrapped.pooling == ("cls", "mean")  # the SVM protocol's
    clouds, data = ragged_set([1500, 700, 1100, 300])
    expected = extract_features(encoder, data, wrapped.spec, wrapped.pooling, "cpu", seed=3, normalize=False)
    torch.testing.assert_close(wrapped.embed(clouds, seed=3), torch.from_numpy(expected), rtol=0, atol=0)


def test_from_an_mlflow_runs_uri(tmp_path):
    encoder, cfg = tiny_encoder(1)
    export = export_encoder(encoder, cfg, tmp_path / "export", {"step": 40})
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("pretrain", artifact_location=str(tmp_path / "artifacts"))
    run_id = client.create_run(experiment).info.run_id
    client.log_artifacts(run_id, str(export), "encoder")
    loaded = from_pretrained(f"runs:/{run_id}/encoder", tracking_uri=uri)
    assert loaded.metadata == {"step": 40, "loaded_from": f"runs:/{run_id}/encoder"}
    points = shape_cloud(0, np.random.default_rng(0), 1200)
    torch.testing.assert_close(loaded.embed(points), PretrainedEncoder(encoder, cfg).embed(points), rtol=0, atol=0)


@pytest.mark.parametrize("backbone, pooling", [("pointnet", ("max",)), ("dgcnn", ("max", "mean"))])
def test_a_point_network_export_embeds_like_its_svm_features(tmp_path, backbone, pooling):
    """A DwC point network from its export: the embedding's pooling, the same numbers as the feature path,
    one token per kept point, and the tokens' centres are those points in the input's coordinates."""
    cfg = load_model_config(TINY).model_copy(update={"method": "dwc", "backbone": backbone})
    cfg = model_config_from_dict({**cfg.model_dump(), "pointnet": {"widths": [16, 32]},
                                  "dgcnn": {"k": 4, "edge_widths": [8, 16], "global_dim": 32}})
    export = export_encoder(random_encoder(cfg, 0), cfg, tmp_path / "export")
    wrapped = from_pretrained(export, num_points=256)
    assert wrapped.pooling == pooling and not wrapped.encoder.has_patch_tokens
    clouds, data = ragged_set([1500, 700, 200])
    expected = extract_features(wrapped.encoder, data, wrapped.spec, pooling, "cpu", seed=3, normalize=False)
    torch.testing.assert_close(wrapped.embed(clouds, seed=3), torch.from_numpy(expected), rtol=0, atol=0)
    out = wrapped.embed(clouds[2], return_tokens=True)
    assert out.tokens.shape == (1, 200, 32) and out.centers.shape == (1, 200, 3)
    kept = {tuple(p) for p in np.round(out.centers[0].numpy(), 5)}
    assert kept == {tuple(p) for p in np.round(clouds[2], 5)}  # 200 points, fewer than asked: all of them
