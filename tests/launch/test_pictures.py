"""Pictures: every figure from tiny real inputs (the model's own patchify and masks, a real MLflow store)."""

from __future__ import annotations

import importlib.util
import shutil
import sys

import numpy as np
import pytest
import torch
from matplotlib.collections import PathCollection
from matplotlib.colors import to_rgba
from matplotlib.image import imread
from mlflow import MlflowClient

from launch.pictures import (
    attention_figure,
    comparison_figure,
    confusion_figure,
    crops_figure,
    embed_2d,
    embedding_figure,
    loss_curves_figure,
    loss_history_from_mlflow,
    masks_figure,
    part_segmentation_figure,
    save_figure,
)
from launch.pictures.__main__ import main as pictures_main
from launch.pictures.__main__ import parse_args as pictures_args
from launch.pictures.clouds import robust_limits, saliency_figure
from launch.pictures.sample import Shape, crop_spec, sample_figures, shape_saliency
from launch.pictures.panels import MASKED_COLOR, class_styles
from launch.pictures.segmentation import ERROR_COLOR
from launch.pictures.shapes import shard_shape, synthetic_shape
from launch.tracking import Tracker
from model.backbone import PointCloud
from model.backbones import build_backbone
from model.config import load_model_config, model_config_from_dict
from model.export import export_encoder
from model.masking import inverse_block_mask, mask_counts
from model.patchify import patchify
from tests.conftest import ROOT, exclude_samples
from tests.launch.eval_fixtures import help_without

TINY = ROOT / "configs" / "model" / "tiny.yaml"


def sphere(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, 3)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def points_in(ax) -> int:
    return sum(len(c.get_offsets()) for c in ax.collections)


def cloud_axes(fig) -> list:
    return [ax for ax in fig.axes if ax.name == "3d"]


def assert_no_empty_axes(fig) -> None:
    """Every axes of the figure is shown and draws something: no blank grid cell in a report."""
    assert fig.axes and all(ax.get_visible() and ax.has_data() for ax in fig.axes)


def assert_png(path, min_bytes: int = 20_000) -> np.ndarray:
    """A real picture: a PNG of some size that is not one flat colour."""
    assert path.suffix == ".png" and path.stat().st_size > min_bytes
    image = imread(path)
    assert image.shape[0] > 300 and image.shape[1] > 300 and image[..., :3].std() > 0.02
    return image


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory) -> str:
    """A real sqlite MLflow store, shared by this module's tests (creating one costs seconds)."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture
def run_with_history(tracking_uri) -> tuple[str, str]:
    """(tracking URI, id of a new run) holding a short pretraining-like history."""
    tracker = Tracker(tracking_uri, "pictures-test", None, "tiny", {})
    for step in range(1, 31):
        tracker.log_metrics({"loss/total": 9.0 / step, "loss/cls": 5.0 / step, "loss/patch": 4.0 / step,
                             "loss/koleo": -0.1 * step, "opt/lr": 1e-4 * step, "throughput/samples_per_s": 50.0},
                            step)
    tracker.log_metrics({"loss/total": 123.0}, 30)  # a resumed run logs its last step again
    for step in (0, 10, 20, 30):
        tracker.log_metrics({"monitor/shapes/svm": 0.5 + step / 100, "monitor/shapes/svm/best": 0.5 + step / 100,
                             "monitor/shapes/knn": 0.4, "monitor/shapes/seconds": 3.0}, step)
    return tracking_uri, tracker.run_id


def test_crops_figure_draws_every_crop_without_its_padding(tmp_path):
    g = np.full((2, 512, 3), 99.0, np.float32)  # padding far away: drawn, it would blow up the axis limits
    g[0], g[1, :300] = sphere(512, 0), sphere(300, 1)
    loc = np.full((4, 128, 3), 99.0, np.float32)
    counts = [128, 128, 100, 128]
    for i, n in enumerate(counts):
        loc[i, :n] = 0.2 * sphere(n, 2 + i)
    fig = crops_figure(g, [512, 300], loc, counts, source=sphere(2000, 9))
    axes = cloud_axes(fig)
    assert [points_in(ax) for ax in axes] == [2000, 512, 300, *counts]
    assert [ax.get_title().split("\n")[0] for ax in axes] == ["source shape", "global crop 1", "global crop 2",
                                                              "local crop 1", "local crop 2", "local crop 3",
                                                              "local crop 4"]
    assert all(ax.get_xlim()[1] < 2 and ax.get_zlim()[1] < 2 for ax in axes)
    assert_no_empty_axes(fig)
    assert_png(*save_figure(fig, tmp_path, "crops"))


def test_crops_figure_rejects_counts_beyond_the_crop():
    with pytest.raises(ValueError, match=r"global_counts \[513\]"):
        crops_figure(np.zeros((1, 512, 3)), [513])


def test_masks_figure_shows_each_mask_of_the_models_inverse_block_masking(tmp_path, torch_rng):
    cfg = load_model_config(TINY)
    crop = torch.from_numpy(sphere(512, 3))[None]
    patches = patchify(crop, torch.tensor([512]), cfg.patchify.global_patches, cfg.patchify.patch_size, generator=torch_rng)
    masks = inverse_block_mask(patches.centers, cfg.masking, torch_rng)
    counts = mask_counts(cfg.patchify.global_patches, cfg.masking)
    k = cfg.patchify.patch_size
    fig = masks_figure(patches.centers[0], patches.neighborhoods[0], masks)
    axes = cloud_axes(fig)
    assert len(axes) == cfg.masking.num_masks == len(masks)
    for ax, mask in zip(axes, masks):
        assert ax.get_title().endswith(f"{counts.num_visible} visible, {counts.num_masked} masked")
        hidden, shown = ax.collections
        # the points drawn as visible are exactly those of the patches the mask leaves visible
        visible = (patches.centers[0][~mask, None] + patches.neighborhoods[0][~mask]).reshape(-1, 3)
        assert np.allclose(shown.get_offsets(), visible[:, :2].numpy())
        assert len(hidden.get_offsets()) == counts.num_masked * k
    assert_no_empty_axes(fig)
    assert_png(*save_figure(fig, tmp_path, "masks"))
    for ax in axes:  # colours are final once drawn (matplotlib 3-D sorts them by depth then)
        hidden, shown = ax.collections
        assert np.allclose(hidden.get_facecolor()[:, :3], float(MASKED_COLOR))
        colors, per_color = np.unique(shown.get_facecolor()[:, :3], axis=0, return_counts=True)
        assert len(colors) == counts.num_visible and (per_color == k).all()  # one colour per visible patch
        assert not np.isclose(colors, float(MASKED_COLOR)).all(axis=1).any()


def test_masks_figure_rejects_masks_of_another_patch_count():
    with pytest.raises(ValueError, match="number of patches"):
        masks_figure(np.zeros((8, 3)), np.zeros((8, 4, 3)), np.zeros((4, 9), bool))


def test_attention_figure_colours_each_point_by_its_nearest_patch(tmp_path):
    centers = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0]], np.float32)
    points = np.repeat(centers, 50, axis=0) + 0.1 * sphere(200, 4)
    owner = np.repeat(np.arange(4), 50)
    attention = np.array([[0, 0, 1, 0], [0.25, 0.25, 0.25, 0.25]])  # head 1 looks at patch 2 only
    fig = attention_figure(points, centers, attention)
    mean, head1, head2 = cloud_axes(fig)
    assert [ax.get_title() for ax in (mean, head1, head2)] == ["mean over heads", "head 1", "head 2"]
    # attention x P: head 1 is 4 on patch 2 and 0 elsewhere, head 2 uniform (1), the mean (4 + 1) / 2 = 2.5
    assert np.allclose(head1.collections[0].get_array(), np.where(owner == 2, 4.0, 0.0))
    assert np.allclose(head2.collections[0].get_array(), 1.0)
    assert np.allclose(mean.collections[0].get_array(), np.where(owner == 2, 2.5, 0.5))
    colorbars = [ax for ax in fig.axes if ax.name != "3d"]
    assert len(colorbars) == 1 and "1 = uniform" in colorbars[0].get_ylabel()
    assert mean.collections[0].get_clim() == (0.0, 4.0)  # the values shown: 0 .. 4
    assert_no_empty_axes(fig)
    assert_png(*save_figure(fig, tmp_path, "attention"))
    assert len(cloud_axes(attention_figure(points, centers, attention[1]))) == 1  # a single map: no per-head panels
    with pytest.raises(ValueError, match="one value per patch"):
        attention_figure(points, centers, np.ones((2, 5)))


def test_attention_colour_range_follows_the_shown_values():
    centers = sphere(16, 6)
    points = np.repeat(centers, 20, axis=0) + 0.01 * sphere(320, 7)
    near_uniform = (1.0 + 0.1 * np.random.default_rng(8).uniform(-1, 1, (2, 16))) / 16  # x P: 0.9 .. 1.1
    fig = attention_figure(points, centers, near_uniform)
    lo, hi = fig.axes[0].collections[0].get_clim()
    assert 0.9 <= lo < hi <= 1.1  # small departures from uniform fill the scale, not a sliver of 0 .. max
    shown = np.concatenate([np.ma.getdata(ax.collections[0].get_array()) for ax in fig.axes if ax.name == "3d"])
    assert (lo, hi) == pytest.approx(tuple(np.percentile(shown, [2, 98])))
    assert all(ax.collections[0].get_clim() == (lo, hi) for ax in fig.axes if ax.name == "3d")  # one scale
    peaked = np.full(16, 0.1 / 15)
    peaked[3] = 0.9  # one patch takes 90%: 14.4 x uniform on 20 of 320 points
    fig = attention_figure(points, centers, peaked)
    assert fig.axes[0].collections[0].get_clim() == pytest.approx(robust_limits(np.repeat(peaked * 16, 20)))
    assert robust_limits(np.ones(10)) == (0.5, 1.5)  # a flat map: a range around its value
    assert_no_empty_axes(fig)


def clusters(per_class: int = 30, dims: int = 16) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    means = 6.0 * rng.standard_normal((3, dims))
    labels = np.repeat(np.arange(3), per_class)
    return (means[labels] + rng.standard_normal((len(labels), dims))).astype(np.float32), labels


def small_point_network(backbone: str):
    cfg = load_model_config(ROOT / f"configs/model/dwc_{backbone}.yaml")
    cfg = model_config_from_dict({**cfg.model_dump(), "pointnet": {"widths": [16, 32]},
                                  "dgcnn": {"k": 6, "edge_widths": [8, 16], "global_dim": 32}})
    torch.manual_seed(0)
    return build_backbone(cfg), cfg


@pytest.mark.parametrize("backbone", ["pointnet", "dgcnn"])
def test_saliency_is_the_embedding_gradient_norm_at_each_point(backbone):
    encoder, _ = small_point_network(backbone)
    points, saliency = shape_saliency(encoder, sphere(500, 0) * [1.0, 0.5, 0.2], 200, seed=3)
    assert points.shape == (200, 3) and saliency.shape == (200,) and encoder.training
    assert all(p.grad is None for p in encoder.parameters())  # no gradient left behind in the module
    coords = torch.from_numpy(points)[None].requires_grad_(True)
    encoder.eval()
    encoder.embedding(encoder(PointCloud(coords, torch.tensor([200])))).norm().backward()
    np.testing.assert_allclose(saliency, coords.grad[0].norm(dim=-1).numpy(), rtol=1e-5, atol=1e-8)
    assert saliency.min() >= 0 and saliency.max() > 3 * np.median(saliency)  # a few points carry the max pool


def test_a_point_network_gets_a_saliency_picture_instead_of_attention(tmp_path):
    encoder, cfg = small_point_network("pointnet")
    shape = Shape("sphere", sphere(2048, 1))
    figures = sample_figures(shape, encoder, cfg, crop_spec(cfg, 256, 64), seed=0)
    assert set(figures) == {"crops", "saliency"}  # DwC masks nothing; a point network has no attention
    fig = figures["saliency"]
    (ax,) = cloud_axes(fig)
    assert points_in(ax) == 256 and "pointnet saliency" in fig._suptitle.get_text()
    assert_png(save_figure(fig, tmp_path, "saliency")[0])
    with pytest.raises(ValueError, match="saliency has 3 values for 4 points"):
        saliency_figure(np.zeros((4, 3)), np.ones(3))


def test_embedding_keeps_classes_apart_and_the_figure_names_them(tmp_path):
    features, labels = clusters()
    xy = embed_2d(features, "tsne", seed=0)
    assert xy.shape == (90, 2)
    d = ((xy[:, None] - xy[None]) ** 2).sum(-1) + np.diag(np.full(90, np.inf))
    assert (labels[d.argmin(axis=1)] == labels).mean() > 0.95  # nearest neighbour in 2-D: same class
    names = ["chair", "mug", "torus"]
    fig = embedding_figure(features, labels, names)
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_legend().get_texts()] == names
    assert [len(c.get_offsets()) for c in ax.collections] == [30, 30, 30]
    assert_no_empty_axes(fig)
    assert_png(*save_figure(fig, tmp_path, "embedding"))


def test_class_styles_tell_40_classes_apart_by_colour_and_marker():
    styles = class_styles(40)
    assert len(set(styles)) == 40
    assert len({marker for _, marker in class_styles(10)}) == 1  # few classes: colour alone, all circles
    colors = [color for color, _ in styles]
    for k in range(40):  # a colour shared by two classes (tab20 has 20) never comes with the same marker
        assert all(styles[j][1] != styles[k][1] for j in range(40) if j != k and colors[j] == colors[k])


def test_embedding_figure_draws_each_class_in_its_style_with_the_legend_outside():
    rng = np.random.default_rng(0)
    labels = np.arange(120) % 40
    features = rng.standard_normal((120, 8)).astype(np.float32) + labels[:, None]
    fig = embedding_figure(features, labels, [f"class {k}" for k in range(40)])
    (ax,) = fig.axes
    styles = class_styles(40)
    assert [tuple(c.get_facecolor()[0, :3]) for c in ax.collections] == [color for color, _ in styles]
    fig.canvas.draw()
    legend, plot = ax.get_legend().get_window_extent(), ax.get_window_extent()
    assert legend.x0 >= plot.x1  # right of the plot area, over no point
    assert_no_empty_axes(fig)


def test_comparison_figure_puts_encoders_side_by_side_with_their_accuracies(tmp_path):
    features, labels = clusters()
    noise = np.random.default_rng(1).standard_normal(features.shape).astype(np.float32)
    names = ["chair", "mug", "torus"]
    fig = comparison_figure({"pretrained": features, "random init": noise}, labels, names,
                            {"pretrained": 0.9, "random init": 0.56})
    assert [ax.get_title() for ax in fig.axes] == ["pretrained: SVM 90.0%", "random init: SVM 56.0%"]
    assert all(ax.get_legend() is None for ax in fig.axes)
    (legend,) = fig.legends  # one colour legend for both panels
    assert [t.get_text() for t in legend.get_texts()] == names
    left, right = fig.axes
    assert [len(c.get_offsets()) for c in left.collections] == [len(c.get_offsets()) for c in right.collections]
    assert [tuple(c.get_facecolor()[0]) for c in left.collections] == [
        tuple(c.get_facecolor()[0]) for c in right.collections]  # a class looks the same in both panels
    assert_no_empty_axes(fig)
    assert_png(*save_figure(fig, tmp_path, "comparison"))
    with pytest.raises(ValueError, match="must name the same"):
        comparison_figure({"pretrained": features}, labels, names, {"random init": 0.5})
    with pytest.raises(ValueError, match=r"features\['random init'\] has 89 rows, expected 90"):
        comparison_figure({"pretrained": features, "random init": noise[1:]}, labels, names,
                          {"pretrained": 0.9, "random init": 0.5})


def test_embedding_figure_rejects_labels_outside_the_class_names():
    features, labels = clusters(per_class=4)
    with pytest.raises(ValueError, match="labels must index class_names"):
        embedding_figure(features, labels, ["chair", "mug"])


@pytest.mark.skipif(importlib.util.find_spec("umap") is not None, reason="umap-learn is installed")
def test_umap_without_the_package_says_so():
    with pytest.raises(ValueError, match="umap-learn"):
        embed_2d(clusters(per_class=4)[0], "umap")


def test_confusion_figure_shows_row_fractions_counts_and_both_accuracies(tmp_path):
    y_true = [0, 0, 0, 0, 1, 1, 2, 2]
    y_pred = [0, 0, 0, 1, 1, 0, 2, 2]
    fig = confusion_figure(y_true, y_pred, ["chair", "mug", "torus", "bowl"])  # bowl: no samples
    ax = fig.axes[0]
    expected = np.array([[3 / 4, 1 / 4, 0, 0], [1 / 2, 1 / 2, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]])
    assert np.allclose(ax.images[0].get_array(), expected)
    assert sorted((t.get_position(), t.get_text()) for t in ax.texts) == sorted(
        [((0, 0), "3"), ((1, 0), "1"), ((0, 1), "1"), ((1, 1), "1"), ((2, 2), "2")])
    # OA 6/8; mean class accuracy over the classes present: (3/4 + 1/2 + 1) / 3
    assert "overall accuracy 75.0%" in ax.get_title() and "mean class accuracy 75.0%" in ax.get_title()
    assert [t.get_text() for t in ax.get_yticklabels()] == ["chair", "mug", "torus", "bowl"]
    assert_no_empty_axes(fig)
    assert_png(*save_figure(fig, tmp_path, "confusion"))
    with pytest.raises(ValueError, match="y_pred has 7 entries, expected 8"):
        confusion_figure(y_true, y_pred[:7], ["chair", "mug", "torus"])


PARTS = ["mug body", "mug handle", "chair seat", "chair back", "chair leg", "lamp base"]


def point_colors(ax) -> np.ndarray:
    """(n, 4) colours of the points of a panel's one scatter, in the order they were given.

    The 3-D collection's own `get_facecolor` reorders them by depth (and, before a draw, drops the last).
    """
    (scatter,) = ax.collections
    return PathCollection.get_facecolor(scatter)


def two_segmented_shapes() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A padded (2, 600, 3) batch: a 'mug' of 600 points (parts 0, 1) and a 'chair' of 400 (parts 2, 3, 4).

    Padding sits far away with id -1: drawn, it would add points and blow up the axis limits. The
    prediction swaps a few points of each shape to a neighbouring part.
    """
    points = np.full((2, 600, 3), 99.0, np.float32)
    points[0], points[1, :400] = sphere(600, 0), 0.5 * sphere(400, 1)
    truth = np.full((2, 600), -1)
    truth[0] = (points[0, :, 2] > 0.5).astype(int)
    truth[1, :400] = 2 + np.digitize(points[1, :400, 2], [-0.1, 0.2])
    pred = truth.copy()
    pred[0, :30] = 1 - truth[0, :30]
    pred[1, :20] = np.where(truth[1, :20] == 4, 3, 4)
    return points, truth, pred


def test_part_segmentation_figure_puts_prediction_beside_truth(tmp_path):
    points, truth, pred = two_segmented_shapes()
    fig = part_segmentation_figure(points, truth, pred, PARTS, titles=["mug: IoU 0.90", "chair: IoU 0.85"])
    axes = cloud_axes(fig)
    assert len(axes) == len(fig.axes) == 6  # ground truth, prediction, errors per shape
    assert [points_in(ax) for ax in axes] == [600] * 3 + [400] * 3  # no padding drawn
    assert [ax.get_title() for ax in axes] == [
        "ground truth", "prediction\nmug: IoU 0.90", "errors: 30 of 600 points (5.0%)",
        "ground truth", "prediction\nchair: IoU 0.85", "errors: 20 of 400 points (5.0%)"]
    for row in (axes[:3], axes[3:]):  # one view and one scale per shape
        limits = [(ax.get_xlim(), ax.get_ylim(), ax.get_zlim(), ax.elev, ax.azim) for ax in row]
        assert all(lim == limits[0] for lim in limits)
    assert axes[0].get_xlim()[1] < 2 and axes[3].get_xlim()[1] < 1  # each shape fills its own cube
    color_of = {}
    for row, (t, p) in enumerate(zip(truth, pred)):
        valid = t >= 0
        for ax, ids in zip(axes[3 * row:3 * row + 2], (t[valid], p[valid])):
            assert len(point_colors(ax)) == len(ids)
            for k, color in zip(ids, map(tuple, point_colors(ax))):
                assert color_of.setdefault(k, color) == color  # a part has one colour in every panel
        errors = point_colors(axes[3 * row + 2])
        wrong = np.all(np.isclose(errors, to_rgba(ERROR_COLOR)), axis=1)
        assert np.array_equal(wrong, t[valid] != p[valid])
        assert np.allclose(errors[~wrong], to_rgba(MASKED_COLOR))
    assert sorted(color_of) == [0, 1, 2, 3, 4] and len(set(color_of.values())) == 5  # told apart
    parts, right_wrong = fig.legends
    assert [t.get_text() for t in parts.get_texts()] == PARTS[:5]  # "lamp base" is in no shape
    assert [tuple(h.get_color()) for h in parts.legend_handles] == [color_of[k] for k in range(5)]
    assert [t.get_text() for t in right_wrong.get_texts()] == ["right part", "wrong part"]
    assert_no_empty_axes(fig)
    assert_png(*save_figure(fig, tmp_path, "parts"))


def test_part_segmentation_figure_takes_clouds_of_any_size_and_thins_the_large_ones():
    rng = np.random.default_rng(0)
    clouds = [sphere(5000, 2), sphere(300, 3)]
    truth = [rng.integers(0, 2, 5000), rng.integers(2, 4, 300)]
    fig = part_segmentation_figure(clouds, truth, truth, PARTS, max_points=1000)
    axes = cloud_axes(fig)
    assert [points_in(ax) for ax in axes] == [1000] * 3 + [300] * 3
    first = [ax.collections[0]._offsets3d for ax in axes[:3]]  # the same points in each panel of a row
    assert all(np.array_equal(np.stack(o), np.stack(first[0])) for o in first)
    assert axes[1].get_title() == "prediction\n100.0% of points right"
    assert "2 shapes" in fig.get_suptitle()


@pytest.mark.parametrize(("change", "message"), [
    (lambda p, t, q: (p, t[:1], q), r"truth has 1 shapes, expected 2"),
    (lambda p, t, q: (p, t, q[:, :599]), r"pred\[0\] has 599 entries, expected 600"),
    (lambda p, t, q: (p, np.where(t == 4, 6, t), q), r"truth\[1\] must index part_names \(0\.\.5"),
    (lambda p, t, q: (p, t, np.where(q == 1, 9, q)), r"pred\[0\] must index part_names"),
    (lambda p, t, q: (p, t, np.where(t < 0, 0, q)), r"pred\[1\] must mark the same points as padding"),
    (lambda p, t, q: (p, np.full_like(t, -1), np.full_like(q, -1)), r"truth\[0\] marks every point as padding"),
    (lambda p, t, q: (p[0], t, q), r"points must have 3 dimensions"),
    (lambda p, t, q: (p[..., :2], t, q), r"points\[0\] must be \(N, 3\)"),
])
def test_part_segmentation_figure_rejects_inconsistent_inputs_naming_the_argument(change, message):
    with pytest.raises(ValueError, match=message):
        part_segmentation_figure(*change(*two_segmented_shapes()), PARTS)


def test_part_segmentation_figure_needs_a_title_per_shape():
    with pytest.raises(ValueError, match="titles has 1 entries, expected 2"):
        part_segmentation_figure(*two_segmented_shapes(), PARTS, titles=["mug"])


@pytest.mark.slow
def test_loss_history_from_mlflow_and_its_curves(tmp_path, run_with_history):
    uri, run_id = run_with_history
    history = loss_history_from_mlflow(run_id, tracking_uri=uri)
    assert list(history) == ["loss/total", "loss/cls", "loss/koleo", "loss/patch", "opt/lr", "monitor/shapes/knn",
                             "monitor/shapes/svm"]
    assert [s for s, _ in history["loss/cls"]] == list(range(1, 31))
    assert history["loss/cls"][1] == (2, pytest.approx(2.5))
    assert history["loss/total"][-1] == (30, 123.0)  # the step logged twice keeps its last value
    fig = loss_curves_figure(history)
    shown = fig.axes  # 7 metrics in a 3 x 3 grid: the two spare cells are removed, not left blank
    assert [ax.get_title() for ax in shown] == ["loss/total", "loss/cls", "loss/koleo", "loss/patch", "learning rate",
                                                "shapes: k-NN accuracy", "shapes: linear SVM accuracy"]
    raw, average = shown[1].get_lines()  # 30 points: the raw curve and its moving average
    assert np.allclose(raw.get_ydata(), [5.0 / s for s in range(1, 31)])
    # a centred window of 30 // 20 = 2 values: (v[i - 1] + v[i]) / 2, the first value alone
    assert average.get_ydata()[[0, 9]] == pytest.approx([5.0, (5.0 / 9 + 5.0 / 10) / 2])
    assert len(shown[4].get_lines()) == 1  # the learning-rate schedule is drawn as logged, not smoothed
    (svm,) = shown[6].get_lines()  # the probe's curve, in percent, at the steps it was taken
    assert list(svm.get_xdata()) == [0, 10, 20, 30] and np.allclose(svm.get_ydata(), [50, 60, 70, 80])
    assert_no_empty_axes(fig)
    assert_png(*save_figure(fig, tmp_path, "loss_curves"))
    only = loss_history_from_mlflow(run_id, ["loss/patch"], tracking_uri=uri)
    assert list(only) == ["loss/patch"]
    with pytest.raises(ValueError, match=r"no metric \['loss/contrast'\]"):
        loss_history_from_mlflow(run_id, ["loss/contrast"], tracking_uri=uri)
    with pytest.raises(ValueError, match="run 'f00' not found"):
        loss_history_from_mlflow("f00", tracking_uri=uri)


@pytest.mark.slow
def test_save_figure_logs_the_png_to_the_run(tmp_path, run_with_history):
    uri, run_id = run_with_history
    (path,) = save_figure(confusion_figure([0, 1], [0, 1], ["a", "b"]), tmp_path / "out", "confusion", run_id, uri)
    assert path == tmp_path / "out" / "confusion.png"
    (artifact,) = MlflowClient(uri).list_artifacts(run_id, "pictures")
    assert artifact.path == "pictures/confusion.png" and artifact.file_size == path.stat().st_size
    paths = save_figure(confusion_figure([0, 1], [0, 1], ["a", "b"]), tmp_path / "out", "report", run_id, uri,
                        formats=("pdf", "svg"))
    logged = {a.path: a.file_size for a in MlflowClient(uri).list_artifacts(run_id, "pictures")}
    assert {f"pictures/{p.name}": p.stat().st_size for p in paths}.items() <= logged.items()  # every file written
    with pytest.raises(ValueError, match="plain file stem"):
        save_figure(confusion_figure([0, 1], [0, 1], ["a", "b"]), tmp_path, "../escape")


@pytest.fixture
def encoder_dir(tmp_path):
    """An export directory of the tiny architecture, randomly initialised."""
    cfg = load_model_config(TINY)
    torch.manual_seed(0)
    return export_encoder(build_backbone(cfg), cfg, tmp_path / "encoder")


@pytest.mark.slow
def test_cli_draws_synthetic_shapes_and_loss_curves_into_the_run(tmp_path, run_with_history, encoder_dir):
    uri, run_id = run_with_history
    out = tmp_path / "pictures"
    assert pictures_main(["--encoder", str(encoder_dir), "--synthetic", "--samples", "0", "7", "--num-points", "2048",
                          "--out", str(out), "--run-id", run_id, "--tracking-uri", uri]) == 0
    names = {f"sample{i}_{kind}.png" for i in (0, 7) for kind in ("crops", "masks", "attention")} | {"loss_curves.png"}
    assert {p.name for p in out.iterdir()} == names
    for path in out.iterdir():
        assert_png(path)
    logged = {a.path for a in MlflowClient(uri).list_artifacts(run_id, "pictures")}
    assert logged == {f"pictures/{n}" for n in names}


@pytest.mark.slow
def test_cli_draws_a_sample_of_a_sharded_dataset(tmp_path, pretrain_shards, encoder_dir):
    shape = shard_shape(str(pretrain_shards), 20)
    assert shape.points.shape == (4096, 3) and shape.name.endswith(")")  # the key and its label
    with pytest.raises(ValueError, match="index 48 is out of range.*holds 48 samples"):
        shard_shape(str(pretrain_shards), 48)
    out = tmp_path / "pictures"
    assert pictures_main(["--encoder", str(encoder_dir), "--shards", str(pretrain_shards), "--samples", "20",
                          "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["sample20_attention.png", "sample20_crops.png",
                                                     "sample20_masks.png"]


@pytest.mark.slow
def test_a_shard_sample_index_counts_the_excluded_samples_too(tmp_path, pretrain_shards):
    data = tmp_path / "shards"
    shutil.copytree(pretrain_shards, data)
    exclude_samples(data, {1: [4], 2: [15]})  # samples 20 and 47 of the 48
    assert shard_shape(str(data), 20).name == shard_shape(str(pretrain_shards), 20).name
    assert shard_shape(str(data), 47).name == shard_shape(str(pretrain_shards), 47).name
    with pytest.raises(ValueError, match="index 48 is out of range.*holds 48 samples"):
        shard_shape(str(data), 48)


def test_save_figure_writes_pdf_and_svg_for_reports(tmp_path):
    fig = confusion_figure([0, 1, 1], [0, 1, 0], ["a", "b"])
    paths = save_figure(fig, tmp_path, "confusion", formats=("png", "pdf", "svg"))
    assert [p.name for p in paths] == ["confusion.png", "confusion.pdf", "confusion.svg"]
    assert paths[0].read_bytes().startswith(b"\x89PNG")
    assert paths[1].read_bytes().startswith(b"%PDF")
    assert paths[2].read_bytes().lstrip().startswith((b"<?xml", b"<svg"))
    with pytest.raises(ValueError, match="formats must be"):
        save_figure(fig, tmp_path, "confusion", formats=("jpg",))
    with pytest.raises(ValueError, match="plain file stem"):
        save_figure(fig, tmp_path, "a/b", formats=("pdf",))


def test_cli_format_flag(tmp_path, capsys):
    assert pictures_args(["--run-id", "r", "--out", str(tmp_path)]).formats == ["png"]
    assert pictures_args(["--run-id", "r", "--out", str(tmp_path), "--format", "png", "pdf", "svg"]).formats == [
        "png", "pdf", "svg"]
    with pytest.raises(SystemExit):
        pictures_args(["--run-id", "r", "--out", str(tmp_path), "--format", "jpg"])
    assert "invalid choice: 'jpg'" in capsys.readouterr().err


def test_cli_refuses_a_shape_source_without_an_encoder(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        pictures_main(["--synthetic", "--out", str(tmp_path)])
    assert exit_info.value.code == 2 and "need --encoder" in capsys.readouterr().err


def test_synthetic_shapes_without_trimesh_name_the_extra_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "trimesh", None)  # as with only the train extra installed
    monkeypatch.delitem(sys.modules, "sharding.synthetic", raising=False)
    with pytest.raises(ImportError, match=r"needs the 'sharding' extra \(trimesh is not installed\): pip install 'asymdsd-scale\[sharding\]'"):
        synthetic_shape(0)
    with pytest.raises(SystemExit) as exit_info:
        pictures_main(["--encoder", str(tmp_path), "--synthetic", "--out", str(tmp_path)])
    assert exit_info.value.code == 2 and "pip install 'asymdsd-scale[sharding]'" in capsys.readouterr().err


@pytest.mark.slow
def test_help_needs_only_the_train_extra():
    done = help_without("launch.pictures")
    assert done.returncode == 0, done.stderr
    assert "--synthetic" in done.stdout and "--run-id" in done.stdout
