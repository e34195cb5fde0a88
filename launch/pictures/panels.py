"""Shared look of the pictures: one figure type without pyplot, 3-D point panels, class colours and markers.

Figures are built as `matplotlib.figure.Figure` objects, never through `pyplot`: no global figure
registry to leak memory in a long evaluation, no interactive backend to pick, and PNGs render with Agg
whatever `MPLBACKEND` says.
"""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure

# One colour per kind of thing, the same in every picture.
GLOBAL_COLOR = "tab:blue"
LOCAL_COLOR = "tab:orange"
SOURCE_COLOR = "0.35"
MASKED_COLOR = "0.82"
ATTENTION_CMAP = "viridis"  # its light end stays visible on white
PANEL_INCHES = 3.0  # side of one 3-D panel
POINT_SIZE = 5.0


def new_figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def cloud_axes(fig: Figure, rows: int, cols: int, index: int, title: str) -> Axes:
    """A 3-D panel with a fixed, slightly raised view of a Z-up shape and no axis clutter."""
    ax = fig.add_subplot(rows, cols, index, projection="3d")
    ax.view_init(elev=20, azim=-60)
    ax.set_axis_off()
    ax.set_title(title, fontsize=9)
    return ax


def equal_cube(ax: Axes, points: np.ndarray) -> None:
    """Equal scale on x, y and z: a cube around the points, so shapes are not stretched to the box."""
    if len(points) == 0:
        return
    lo, hi = points.min(axis=0), points.max(axis=0)
    middle, half = (lo + hi) / 2, max(float((hi - lo).max()) / 2, 1e-6)
    ax.set_xlim(middle[0] - half, middle[0] + half)
    ax.set_ylim(middle[1] - half, middle[1] + half)
    ax.set_zlim(middle[2] - half, middle[2] + half)
    ax.set_box_aspect((1, 1, 1), zoom=1.3)  # without axes the default leaves a wide empty margin


def scatter3d(ax: Axes, points: np.ndarray, **kwargs):
    """Scatter (n, 3) points; matplotlib's depth shading gives the depth cue on one-colour clouds."""
    kwargs.setdefault("s", POINT_SIZE)
    kwargs.setdefault("linewidths", 0)
    return ax.scatter(points[:, 0], points[:, 1], points[:, 2], **kwargs)


def _without_grey(name: str, grey: int) -> np.ndarray:
    colors = colormaps[name].colors
    return np.array([colors[i] for i in range(len(colors)) if i != grey])


def category_colors(count: int) -> np.ndarray:
    """(count, 4) RGBA colours, one per category, none of them grey (grey means 'masked').

    Up to 24 categories get saturated, clearly distinct colours (tab10, Dark2, Set1); more get the 60
    of tab20, tab20b and tab20c, whose light halves are harder to tell apart; past 60 they cycle.
    """
    if count <= 24:
        palette = np.concatenate([_without_grey("tab10", 7), _without_grey("Dark2", 7), _without_grey("Set1", 8)])
    else:
        palette = np.concatenate([colormaps[name](np.arange(20))[:, :3] for name in ("tab20", "tab20b", "tab20c")])
    rgb = palette[np.arange(count) % len(palette)]
    return np.concatenate([rgb, np.ones((count, 1))], axis=1)


# Filled shapes that stay recognisable at scatter size; an odd count, so no two classes share a style (below).
CLASS_MARKERS = ("o", "s", "^", "D", "v", "P", "X")


def class_styles(count: int) -> list[tuple[tuple[float, float, float], str]]:
    """(RGB colour, marker) of each of `count` classes in a scatter, all pairs distinct up to 140 classes.

    Up to 10 classes: tab10, all circles. Past that, the 20 colours of tab20 with its 10 dark shades
    first, and a new marker every 10 classes: a dark colour and its light twin never share a marker, and
    a colour comes back (every 20 classes) with another marker, so 16-40 classes stay told apart.
    """
    if count <= 10:
        return [(tuple(colormaps["tab10"].colors[k]), CLASS_MARKERS[0]) for k in range(count)]
    tab20 = colormaps["tab20"].colors
    dark_first = [tab20[i] for i in range(0, 20, 2)] + [tab20[i] for i in range(1, 20, 2)]
    return [(tuple(dark_first[k % 20]), CLASS_MARKERS[(k // 10) % len(CLASS_MARKERS)]) for k in range(count)]


def as_array(value, name: str, ndim: int | tuple[int, ...], dtype=None) -> np.ndarray:
    """A numpy copy of an array-like or tensor, with a clear error naming the argument if its rank is off."""
    if hasattr(value, "detach"):  # a torch tensor: pictures take plain arrays but accept tensors too
        value = value.detach().cpu().numpy()
    array = np.asarray(value, dtype=dtype)
    allowed = (ndim,) if isinstance(ndim, int) else ndim
    if array.ndim not in allowed:
        raise ValueError(f"{name} must have {' or '.join(map(str, allowed))} dimensions, got shape {array.shape}")
    return array
