"""The part-segmentation protocol: it learns separable parts, keeps points and labels aligned, and reports mIoU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from launch.evaluation.encoders import random_encoder
from launch.evaluation.part_data import PartSet
from launch.evaluation.partseg import PartSegConfig, build_segmenter, predict_parts, subsample_parts, train_segmenter
from launch.evaluation.report import build_part_report
from launch.evaluation.segmentation import PointPartSegmenter
from model.config import load_model_config, model_config_from_dict
from model.features import InputSpec
from tests.conftest import ROOT

SPEC = InputSpec(num_points=128, subsample="random", num_patches=8, patch_size=16)


def toy_parts(n: int, seed: int) -> PartSet:
    """Two categories with parts a point's position decides: a stick (bottom / top by z) and a plate
    (left / right by x), 160 points each, some clouds shorter (padding)."""
    rng = np.random.default_rng(seed)
    clouds, parts, labels = [], [], []
    for i in range(n):
        category = i % 2
        size = 160 if i % 3 else 140
        scale = [0.2, 0.2, 1.0] if category == 0 else [1.0, 1.0, 0.1]
        cloud = (rng.uniform(-1, 1, (size, 3)) * scale).astype(np.float32)
        axis = 2 if category == 0 else 0
        clouds.append(cloud)
        parts.append(2 * category + (cloud[:, axis] > 0).astype(np.int64))
        labels.append(category)
    return PartSet.from_clouds(f"toy{seed}", clouds, parts, labels, ("stick", "plate"),
                               ("stick/bottom", "stick/top", "plate/left", "plate/right"), ((0, 1), (2, 3)))


@pytest.fixture(scope="module")
def tiny():
    cfg = load_model_config(ROOT / "configs/model/tiny.yaml")
    return cfg, random_encoder(cfg, 0)


def test_the_protocol_learns_separable_parts(tiny):
    cfg, encoder = tiny
    train, test = toy_parts(32, 0), toy_parts(16, 1)
    recipe = PartSegConfig(input=SPEC, batch_size=8, eval_every=4).with_epochs(12)
    untrained = predict_parts(build_segmenter(encoder, cfg, train, recipe), test, recipe, torch.device("cpu"), 0)
    run = train_segmenter(encoder, cfg, train, test, recipe, "cpu", 0)
    scores = run.final.scores
    assert scores.instance_miou > 0.85 and scores.instance_miou > untrained.scores.instance_miou + 0.2
    assert set(scores.category_iou) == {"stick", "plate"}
    assert [r["epoch"] for r in run.history] == list(range(1, 13))
    assert [("instance_miou" in r) for r in run.history] == [e % 4 == 0 for e in range(1, 13)]
    assert run.history[-1]["loss"] < run.history[0]["loss"]
    assert run.history[-1]["instance_miou"] == scores.instance_miou


@pytest.mark.parametrize("backbone", ["pointnet", "dgcnn"])
def test_a_point_network_learns_separable_parts_with_its_per_point_head(backbone):
    cfg = load_model_config(ROOT / f"configs/model/dwc_{backbone}.yaml")
    cfg = model_config_from_dict({**cfg.model_dump(), "pointnet": {"widths": [32, 64, 128]},
                                  "dgcnn": {"k": 8, "edge_widths": [16, 32], "global_dim": 64}})
    encoder = random_encoder(cfg, 0)
    train, test = toy_parts(32, 0), toy_parts(16, 1)
    recipe = PartSegConfig(input=SPEC, batch_size=8).with_epochs(12)
    segmenter = build_segmenter(encoder, cfg, train, recipe)
    assert isinstance(segmenter, PointPartSegmenter)
    untrained = predict_parts(segmenter, test, recipe, torch.device("cpu"), 0)
    scores = train_segmenter(encoder, cfg, train, test, recipe, "cpu", 0).final.scores
    assert scores.instance_miou > 0.85 and scores.instance_miou > untrained.scores.instance_miou + 0.2


def test_predictions_stay_within_the_category_and_padding_stays_unlabelled(tiny):
    cfg, encoder = tiny
    test = toy_parts(12, 2)
    recipe = PartSegConfig(input=SPEC.model_copy(update={"num_points": 150}), batch_size=4)
    out = predict_parts(build_segmenter(encoder, cfg, test, recipe), test, recipe, torch.device("cpu"), 0)
    valid = np.arange(out.truth.shape[1]) < out.num_points[:, None]
    assert np.array_equal(out.num_points, np.minimum(test.num_points, 150))
    assert np.all(out.pred[~valid] == -1) and np.all(out.truth[~valid] == -1)
    allowed = {0: {0, 1}, 1: {2, 3}}
    for i, label in enumerate(test.labels):
        assert set(out.pred[i, valid[i]].tolist()) <= allowed[int(label)]


def test_subsampling_keeps_each_point_with_its_label():
    points = torch.rand(3, 50, 3, generator=torch.Generator().manual_seed(0))
    counts = torch.tensor([50, 30, 10])
    parts = (points[..., 0] * 1000).long()  # a label that names its point
    parts[1, 30:], parts[2, 10:] = -1, -1
    out, kept, out_parts = subsample_parts(points, counts, parts, SPEC.model_copy(update={"num_points": 20}),
                                           torch.Generator().manual_seed(1))
    assert kept.tolist() == [20, 20, 10]
    valid = torch.arange(20) < kept[:, None]
    assert torch.equal(out_parts[valid], (out[..., 0] * 1000).long()[valid])
    assert torch.all(out_parts[~valid] == -1) and torch.all(out[~valid] == 0)
    assert len(set(out_parts[0].tolist())) == 20  # without replacement


def test_the_schedule_scales_with_the_epochs():
    recipe = PartSegConfig()
    assert (recipe.phase.epochs, recipe.phase.warmup_epochs, recipe.phase.peak_lr) == (300, 10, 2e-4)
    assert (recipe.input.num_points, recipe.input.num_patches, recipe.input.patch_size) == (2048, 128, 32)
    short = recipe.with_epochs(30)
    assert short.phase.epochs == 30 and short.phase.warmup_epochs == pytest.approx(1.0)


def test_the_report_gives_mean_and_std_over_seeds(tiny):
    cfg, encoder = tiny
    train, test = toy_parts(16, 0), toy_parts(8, 1)
    recipe = PartSegConfig(input=SPEC, batch_size=8).with_epochs(2)
    runs = [train_segmenter(encoder, cfg, train, test, recipe, "cpu", seed) for seed in (0, 1)]
    report = build_part_report(runs, train.class_names, train.part_names, {"kind": "toy"}, {}, {})
    inst = [r.final.scores.instance_miou for r in runs]
    assert report["protocol"] == "partseg" and report["metrics"] == ["instance_miou", "class_miou", "point_accuracy"]
    assert report["instance_miou"]["mean"] == pytest.approx(np.mean(inst))
    assert report["instance_miou"]["std"] == pytest.approx(np.std(inst, ddof=1))
    assert set(report["category_iou"]) == {"stick", "plate"} and report["category_iou"]["plate"]["n"] == 2
    assert [r["seed"] for r in report["runs"]] == [0, 1] and report["part_names"][3] == "plate/right"
