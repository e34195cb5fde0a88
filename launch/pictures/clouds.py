"""Pictures of what the model sees of one shape: its crops, the masks of a global crop, CLS attention.

Each function takes plain arrays (numpy or torch) in the layouts the pipeline and the model already use,
so the demo, the evaluation and the CLI draw the same pictures from their own data.
"""

from __future__ import annotations

import numpy as np
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from launch.pictures.panels import (
    ATTENTION_CMAP,
    GLOBAL_COLOR,
    LOCAL_COLOR,
    MASKED_COLOR,
    PANEL_INCHES,
    SOURCE_COLOR,
    as_array,
    category_colors,
    cloud_axes,
    equal_cube,
    new_figure,
    scatter3d,
)


def _valid_crops(points, counts, name: str) -> list[np.ndarray]:
    """The valid (unpadded) points of each of C padded crops (C, N, 3) with counts (C,)."""
    points = as_array(points, f"{name}_points", 3, np.float32)
    counts = as_array(counts, f"{name}_counts", 1, np.int64)
    if len(counts) != len(points) or points.shape[2] != 3:
        raise ValueError(f"{name}_points {points.shape} and {name}_counts {counts.shape} must be (C, N, 3) and (C,)")
    if (counts < 0).any() or (counts > points.shape[1]).any():
        raise ValueError(f"{name}_counts {counts.tolist()} must lie in [0, {points.shape[1]}]")
    return [crop[:n] for crop, n in zip(points, counts.tolist())]


def crops_figure(global_points, global_counts, local_points=None, local_counts=None, source=None,
                 title: str | None = None) -> Figure:
    """The multi-crop of one sample: global crops on the top row (after the source shape, if given), local below.

    global_points (Cg, N, 3) and local_points (Cl, n, 3) are padded crops as `pipeline.crops.multi_crop`
    returns them, with their valid counts; padding is not drawn. Every panel has its own scale (a local
    crop fills its panel like a global one: the model normalises each crop to the unit sphere too).
    """
    top = _valid_crops(global_points, global_counts, "global")
    bottom = [] if local_points is None else _valid_crops(local_points, local_counts, "local")
    row0: list[tuple[str, np.ndarray, str]] = []
    if source is not None:
        source = as_array(source, "source", 2, np.float32)
        row0.append((f"source shape\n{len(source)} points", source, SOURCE_COLOR))
    row0 += [(f"global crop {i + 1}\n{len(c)} points", c, GLOBAL_COLOR) for i, c in enumerate(top)]
    row1 = [(f"local crop {i + 1}\n{len(c)} points", c, LOCAL_COLOR) for i, c in enumerate(bottom)]
    rows = [r for r in (row0, row1) if r]
    cols = max(len(r) for r in rows)
    fig = new_figure(PANEL_INCHES * cols, PANEL_INCHES * len(rows) + 0.4)
    for r, row in enumerate(rows):
        for c, (label, pts, color) in enumerate(row):
            ax = cloud_axes(fig, len(rows), cols, r * cols + c + 1, label)
            scatter3d(ax, pts, color=color)
            equal_cube(ax, pts)
    fig.suptitle(title or "Multi-crop of one shape (global crops: teacher and student; local crops: student)")
    return fig


def masks_figure(centers, neighborhoods, masks, title: str | None = None) -> Figure:
    """The masks of one global crop, one panel each: every visible patch in its own colour, masked ones grey.

    centers (P, 3) and neighborhoods (P, K, 3) (relative to their centre) are one crop of
    `model.patchify.Patches`; masks (M, P) bool, True = masked, as `model.masking.inverse_block_mask`
    returns for that crop. The student encoder sees only the visible patches; the masked ones are the
    prediction targets.
    """
    centers = as_array(centers, "centers", 2, np.float32)
    neighborhoods = as_array(neighborhoods, "neighborhoods", 3, np.float32)
    masks = as_array(masks, "masks", (1, 2), bool)
    masks = masks[None] if masks.ndim == 1 else masks
    p = len(centers)
    if neighborhoods.shape[0] != p or masks.shape[1] != p:
        raise ValueError(f"centers {centers.shape}, neighborhoods {neighborhoods.shape} and masks {masks.shape} "
                         f"must agree on the number of patches P")
    patch_points = centers[:, None, :] + neighborhoods  # (P, K, 3) absolute
    everything = patch_points.reshape(-1, 3)
    fig = new_figure(PANEL_INCHES * len(masks), PANEL_INCHES + 0.9)
    for m, mask in enumerate(masks):
        visible = np.flatnonzero(~mask)
        hidden = np.flatnonzero(mask)
        ax = cloud_axes(fig, 1, len(masks), m + 1, f"mask {m + 1}: {len(visible)} visible, {len(hidden)} masked")
        scatter3d(ax, patch_points[hidden].reshape(-1, 3), color=MASKED_COLOR, s=2.0, depthshade=False,
                  label="masked")
        colors = np.repeat(category_colors(len(visible)), patch_points.shape[1], axis=0)
        scatter3d(ax, patch_points[visible].reshape(-1, 3), c=colors, s=7.0, label="visible")
        equal_cube(ax, everything)
    handles = [Line2D([], [], ls="", marker="o", color=MASKED_COLOR, label="masked patch (target)"),
               Line2D([], [], ls="", marker="o", color=category_colors(1)[0], label="visible patch (a colour each)")]
    fig.legend(handles=handles, loc="outside lower center", ncols=2, fontsize=9, frameon=False)
    fig.suptitle(title or f"Inverse block masks of a global crop ({p} patches)")
    return fig


def nearest_center(points: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """(N,) index of each point's nearest patch centre: the patch whose attention colours it."""
    d = ((points[:, None, :] - centers[None, :, :]) ** 2).sum(-1)
    return d.argmin(axis=1)


ROBUST_PERCENTILES = (2.0, 98.0)  # a few outlying points do not squeeze every other colour together


def robust_limits(values: np.ndarray) -> tuple[float, float]:
    """(vmin, vmax) of a colour scale: the 2nd and 98th percentiles of the values shown.

    Values that are all (nearly) equal get a range of 1 around them, so a flat map is drawn mid-scale
    rather than at an arbitrary end.
    """
    lo, hi = (float(v) for v in np.percentile(values, ROBUST_PERCENTILES))
    if hi - lo < 1e-6:
        return lo - 0.5, hi + 0.5
    return lo, hi


def _extend(values: np.ndarray, norm: Normalize) -> str:
    """Which ends of the colourbar to draw as arrows: those beyond which some shown values were clipped."""
    below, above = bool((values < norm.vmin).any()), bool((values > norm.vmax).any())
    return {(False, False): "neither", (True, False): "min", (False, True): "max", (True, True): "both"}[below, above]


def attention_figure(points, centers, attention, title: str | None = None) -> Figure:
    """CLS-to-patch attention over a shape: the mean over heads, then each head, on one colour scale.

    points (N, 3) are the shape's points, centers (P, 3) its patch centres, attention (heads, P) or (P,)
    the CLS token's attention to each patch (a row of `PointEncoder.cls_attention`). Every point takes
    the value of its nearest centre. Values are shown as attention x P, so 1 is uniform attention and
    the scale reads the same for any number of patches. The colour range is `robust_limits` of the
    points' values over all panels: it spans what this shape's attention does, whether that is a few
    sharp peaks or small departures from uniform.
    """
    points = as_array(points, "points", 2, np.float32)
    centers = as_array(centers, "centers", 2, np.float32)
    attention = as_array(attention, "attention", (1, 2), np.float64)
    attention = attention[None] if attention.ndim == 1 else attention
    p = len(centers)
    if attention.shape[1] != p:
        raise ValueError(f"attention {attention.shape} must have one value per patch centre ({p})")
    relative = attention * p
    maps = [("mean over heads", relative.mean(axis=0))]
    if len(relative) > 1:
        maps += [(f"head {h + 1}", row) for h, row in enumerate(relative)]
    owner = nearest_center(points, centers)
    shown = np.concatenate([values[owner] for _, values in maps])
    norm = Normalize(*robust_limits(shown))
    fig = new_figure(PANEL_INCHES * len(maps) + 0.8, PANEL_INCHES + 0.6)
    axes = []
    for i, (label, values) in enumerate(maps):
        ax = cloud_axes(fig, 1, len(maps), i + 1, label)
        mappable = scatter3d(ax, points, c=values[owner], cmap=ATTENTION_CMAP, norm=norm, depthshade=False)
        equal_cube(ax, points)
        axes.append(ax)
    fig.colorbar(mappable, ax=axes, shrink=0.7, extend=_extend(shown, norm),
                 label="CLS attention x patches (1 = uniform)")
    fig.suptitle(title or f"Teacher CLS-to-patch attention ({p} patches)")
    return fig


def saliency_figure(points, saliency, title: str | None = None) -> Figure:
    """Per-point saliency over a shape (a backbone without patch tokens has no attention to draw).

    points (N, 3), saliency (N,) the gradient norm of the global embedding at each point
    (`launch.pictures.sample.shape_saliency`), shown relative to its mean (1 = average) on the
    `robust_limits` of the values.
    """
    points = as_array(points, "points", 2, np.float32)
    saliency = as_array(saliency, "saliency", 1, np.float64)
    if len(saliency) != len(points):
        raise ValueError(f"saliency has {len(saliency)} values for {len(points)} points")
    relative = saliency / max(float(saliency.mean()), np.finfo(np.float64).tiny)
    norm = Normalize(*robust_limits(relative))
    fig = new_figure(PANEL_INCHES + 0.8, PANEL_INCHES + 0.6)
    ax = cloud_axes(fig, 1, 1, 1, "gradient norm per point")
    mappable = scatter3d(ax, points, c=relative, cmap=ATTENTION_CMAP, norm=norm, depthshade=False)
    equal_cube(ax, points)
    fig.colorbar(mappable, ax=[ax], shrink=0.7, extend=_extend(relative, norm),
                 label="saliency / mean (1 = average point)")
    fig.suptitle(title or "Saliency of the global embedding")
    return fig
