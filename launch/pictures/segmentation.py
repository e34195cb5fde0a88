"""Pictures of part segmentation: each shape's predicted parts beside its ground truth, and where they differ."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from launch.pictures.panels import (
    MASKED_COLOR,
    PANEL_INCHES,
    POINT_SIZE,
    as_array,
    category_colors,
    cloud_axes,
    equal_cube,
    new_figure,
    scatter3d,
)

PANELS = ("ground truth", "prediction", "errors")
ERROR_COLOR = "black"
ERROR_SIZE = 2.5 * POINT_SIZE  # a wrong point stands out of the grey right ones even where they overlap
RIGHT_SIZE = 0.6 * POINT_SIZE


def _per_shape(value, name: str, ndim: int, dtype) -> list[np.ndarray]:
    """The S arrays of a sequence of S shapes, or of one (S, ...) array, each of rank `ndim`."""
    if hasattr(value, "detach") or isinstance(value, np.ndarray):
        return list(as_array(value, name, ndim + 1, dtype))
    return [as_array(v, f"{name}[{i}]", ndim, dtype) for i, v in enumerate(value)]


def _part_ids(value, name: str, sizes: list[int], part_names: Sequence[str]) -> list[np.ndarray]:
    shapes = _per_shape(value, name, 1, np.int64)
    if len(shapes) != len(sizes):
        raise ValueError(f"{name} has {len(shapes)} shapes, expected {len(sizes)} (one per cloud of points)")
    for i, (ids, n) in enumerate(zip(shapes, sizes)):
        if len(ids) != n:
            raise ValueError(f"{name}[{i}] has {len(ids)} entries, expected {n} (one per point)")
        if len(ids) and ids.max() >= len(part_names):
            raise ValueError(f"{name}[{i}] must index part_names (0..{len(part_names) - 1}, or < 0 for padding), "
                             f"got values up to {ids.max()}")
    return shapes


def part_segmentation_figure(points, truth, pred, part_names: Sequence[str],
                             titles: Sequence[str] | None = None, title: str | None = None,
                             max_points: int = 2048) -> Figure:
    """One row per shape: its points coloured by true part, by predicted part, and its wrongly predicted points.

    points are S clouds (N_i, 3) (or one (S, N, 3) array); truth and pred their (N_i,) part ids, indexing
    `part_names` (values < 0 are padding, not drawn, and must be the same points in both). A part has one
    colour in every panel, drawn from the parts the figure shows so that they stay distinct, and the
    legend names exactly those. `titles[i]` labels row i (e.g. "mug: IoU 0.87") in its prediction panel;
    by default that panel gives the fraction of points predicted right. Each row's panels share one view
    and one scale. At most `max_points` points of a shape are drawn (the same ones in each panel).
    """
    clouds = _per_shape(points, "points", 2, np.float32)
    if not clouds:
        raise ValueError("points must hold at least one shape")
    for i, cloud in enumerate(clouds):
        if cloud.shape[1] != 3:
            raise ValueError(f"points[{i}] must be (N, 3), got shape {cloud.shape}")
    sizes = [len(cloud) for cloud in clouds]
    truth = _part_ids(truth, "truth", sizes, part_names)
    pred = _part_ids(pred, "pred", sizes, part_names)
    if titles is not None and len(titles) != len(clouds):
        raise ValueError(f"titles has {len(titles)} entries, expected {len(clouds)} (one per shape)")
    if max_points < 1:
        raise ValueError(f"max_points must be positive, got {max_points}")
    rng = np.random.default_rng(0)
    rows = []
    for i, (cloud, t, p) in enumerate(zip(clouds, truth, pred)):
        valid = t >= 0
        if not np.array_equal(valid, p >= 0):
            raise ValueError(f"pred[{i}] must mark the same points as padding (< 0) as truth[{i}]")
        if not valid.any():
            raise ValueError(f"truth[{i}] marks every point as padding: the shape has nothing to draw")
        cloud, t, p = cloud[valid], t[valid], p[valid]
        wrong = int((t != p).sum())
        label = titles[i] if titles is not None else f"{1 - wrong / len(t):.1%} of points right"
        shown = slice(None)
        if len(cloud) > max_points:
            shown = np.sort(rng.choice(len(cloud), max_points, replace=False))
        rows.append((cloud[shown], t[shown], p[shown], label, wrong, len(t)))
    present = np.unique(np.concatenate([np.concatenate([t, p]) for _, t, p, *_ in rows]))
    colors = np.zeros((len(part_names), 4))
    colors[present] = category_colors(len(present))  # only the parts shown: up to 24 of them stay saturated
    fig = new_figure(PANEL_INCHES * len(PANELS) + (2.8 if len(present) > 20 else 1.6),
                     PANEL_INCHES * len(rows) + 0.8)
    for r, (cloud, t, p, label, wrong, count) in enumerate(rows):
        errors = f"errors: {wrong} of {count} points ({wrong / count:.1%})"
        panel_titles = ("ground truth", f"prediction\n{label}", errors)
        for c, panel_title in enumerate(panel_titles):
            ax = cloud_axes(fig, len(rows), len(PANELS), r * len(PANELS) + c + 1, panel_title)
            if c < 2:
                scatter3d(ax, cloud, c=colors[t if c == 0 else p], depthshade=False)
            else:
                miss = t != p
                look = np.where(miss[:, None], to_rgba(ERROR_COLOR), to_rgba(MASKED_COLOR))
                scatter3d(ax, cloud, c=look, s=np.where(miss, ERROR_SIZE, RIGHT_SIZE), depthshade=False)
            equal_cube(ax, cloud)
    parts = [Line2D([], [], ls="", marker="o", color=colors[k], label=part_names[k]) for k in present]
    fig.legend(handles=parts, loc="outside right upper", fontsize=8, ncols=2 if len(present) > 20 else 1,
               markerscale=1.5, frameon=False, title="part")
    right_wrong = [Line2D([], [], ls="", marker="o", color=MASKED_COLOR, label="right part"),
                   Line2D([], [], ls="", marker="o", color=ERROR_COLOR, label="wrong part")]
    fig.legend(handles=right_wrong, loc="outside lower center", ncols=2, fontsize=9, frameon=False)
    fig.suptitle(title or f"Part segmentation of {len(rows)} shape{'s' if len(rows) > 1 else ''}: "
                          "ground truth, prediction and errors")
    return fig

