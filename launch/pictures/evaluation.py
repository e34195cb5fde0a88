"""Pictures of evaluation results: 2-D maps of the features by class (one encoder, or several side by side),
and a confusion matrix."""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from launch.pictures.panels import as_array, class_styles, new_figure

EMBEDDING_METHODS = ("tsne", "umap")
METHOD_NAMES = {"tsne": "t-SNE", "umap": "UMAP"}  # as a reader knows them, for titles and axis labels
SERIAL_TSNE_SAMPLES = 1000
ANNOTATE_MAX_CLASSES = 20  # above this the counts in the cells become unreadable


def _labels(labels, count: int, class_names: Sequence[str], name: str) -> np.ndarray:
    labels = as_array(labels, name, 1, np.int64)
    if len(labels) != count:
        raise ValueError(f"{name} has {len(labels)} entries, expected {count}")
    if len(labels) and (labels.min() < 0 or labels.max() >= len(class_names)):
        raise ValueError(f"{name} must index class_names (0..{len(class_names) - 1}), "
                         f"got values {labels.min()}..{labels.max()}")
    return labels


def embed_2d(features, method: str = "tsne", seed: int = 0) -> np.ndarray:
    """(n, 2) coordinates of (n, D) features by t-SNE (scikit-learn) or UMAP (only if umap-learn is installed).

    The t-SNE perplexity is capped below n / 3 so that small evaluation sets (a few dozen shapes) work.
    Below `SERIAL_TSNE_SAMPLES` t-SNE runs on one OpenMP thread: each of its ~1000 gradient steps is a
    parallel region, and for so few points the synchronisation costs more than the work.
    """
    features = as_array(features, "features", 2, np.float32)
    n = len(features)
    if n < 4:
        raise ValueError(f"features: a 2-D embedding needs at least 4 samples, got {n}")
    if method == "tsne":
        from sklearn.manifold import TSNE  # scikit-learn loads SciPy: imported when a picture is drawn
        from threadpoolctl import threadpool_limits

        tsne = TSNE(2, perplexity=min(30.0, (n - 1) / 3), init="pca", random_state=seed)
        with threadpool_limits(1 if n < SERIAL_TSNE_SAMPLES else None, user_api="openmp"):
            return tsne.fit_transform(features)
    if method == "umap":
        if importlib.util.find_spec("umap") is None:
            raise ValueError("method 'umap' needs the umap-learn package, which is not installed; use 'tsne'")
        import umap

        return umap.UMAP(n_components=2, random_state=seed).fit_transform(features)
    raise ValueError(f"method must be one of {EMBEDDING_METHODS}, got {method!r}")


def _class_handles(labels: np.ndarray, class_names: Sequence[str]) -> list[Line2D]:
    """Legend entries of the classes present in `labels`, in `class_styles`' colour and marker."""
    styles = class_styles(len(class_names))
    return [Line2D([], [], ls="", marker=styles[k][1], color=styles[k][0], label=class_names[k])
            for k in np.unique(labels)]


def _scatter_classes(ax: Axes, xy: np.ndarray, labels: np.ndarray, class_names: Sequence[str], method: str) -> None:
    """One scatter per present class, in its own (colour, marker), on a tick-free 2-D map."""
    styles = class_styles(len(class_names))
    for k in np.unique(labels):
        members = labels == k
        color, marker = styles[k]
        ax.scatter(xy[members, 0], xy[members, 1], s=14, color=color, marker=marker, label=class_names[k],
                   linewidths=0)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel(f"{METHOD_NAMES[method]} 1")
    ax.set_ylabel(f"{METHOD_NAMES[method]} 2")


def _legend_columns(class_names: Sequence[str]) -> int:
    return 2 if len(class_names) > 20 else 1


def embedding_figure(features, labels, class_names: Sequence[str], method: str = "tsne", seed: int = 0,
                     title: str | None = None, embedded: bool = False) -> Figure:
    """Evaluation features (n, D) in 2-D, one (colour, marker) per class (labels index `class_names`).

    With `embedded`, `features` are already `embed_2d`'s (n, 2) map, so one map can serve several figures.

    Classes that form separate islands are what a linear probe can separate; a class smeared over
    others is where it will confuse them. The legend sits outside the plot, so it never hides points.
    """
    features = as_array(features, "features", 2, np.float32)
    labels = _labels(labels, len(features), class_names, "labels")
    xy = features if embedded else embed_2d(features, method, seed)
    fig = new_figure(8.5 if len(class_names) > 20 else 7.5, 6.0)
    ax = fig.add_subplot()
    _scatter_classes(ax, xy, labels, class_names, method)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, ncols=_legend_columns(class_names),
              markerscale=1.5, frameon=False, title="class")
    ax.set_title(title or f"{METHOD_NAMES[method]} of {len(features)} evaluation features, coloured by class")
    return fig


def comparison_figure(features: Mapping[str, object], labels, class_names: Sequence[str],
                      accuracies: Mapping[str, float], protocol: str = "SVM", method: str = "tsne", seed: int = 0,
                      title: str | None = None, embedded: bool = False) -> Figure:
    """The same labelled shapes embedded by several encoders, one 2-D map each, side by side.

    `features` maps an encoder's name (e.g. "pretrained", "random init") to its (n, D) features of the
    shapes `labels` describes; each panel's title gives that encoder's `protocol` accuracy from
    `accuracies`, so a picture of the maps also states what they score. One legend serves every panel.
    With `embedded`, the features are already `embed_2d`'s (n, 2) maps.
    """
    if not features or set(features) != set(accuracies):
        raise ValueError(f"features {sorted(features)} and accuracies {sorted(accuracies)} must name the same, "
                         "non-empty set of encoders")
    arrays = {name: as_array(f, f"features[{name!r}]", 2, np.float32) for name, f in features.items()}
    count = len(next(iter(arrays.values())))
    labels = _labels(labels, count, class_names, "labels")
    for name, array in arrays.items():
        if len(array) != count:
            raise ValueError(f"features[{name!r}] has {len(array)} rows, expected {count} (one per label)")
    fig = new_figure(5.0 * len(arrays) + (3.0 if len(class_names) > 20 else 1.8), 5.2)
    axes = fig.subplots(1, len(arrays), squeeze=False)[0]
    for ax, (name, array) in zip(axes, arrays.items()):
        _scatter_classes(ax, array if embedded else embed_2d(array, method, seed), labels, class_names, method)
        ax.set_title(f"{name}: {protocol} {accuracies[name]:.1%}")
    fig.legend(handles=_class_handles(labels, class_names), loc="outside right upper", fontsize=8,
               ncols=_legend_columns(class_names), markerscale=1.5, frameon=False, title="class")
    fig.suptitle(title or f"{METHOD_NAMES[method]} of {count} evaluation features, coloured by class")
    return fig


def confusion_figure(y_true, y_pred, class_names: Sequence[str], title: str | None = None) -> Figure:
    """Row-normalised confusion matrix (colour = fraction of a true class), with counts in the cells.

    The title gives the overall accuracy and the mean per-class accuracy, the two numbers the
    reference reports (OA and mAcc).
    """
    from sklearn.metrics import confusion_matrix

    y_true = as_array(y_true, "y_true", 1, np.int64)
    y_true = _labels(y_true, len(y_true), class_names, "y_true")
    y_pred = _labels(y_pred, len(y_true), class_names, "y_pred")
    k = len(class_names)
    counts = confusion_matrix(y_true, y_pred, labels=np.arange(k))
    support = counts.sum(axis=1, keepdims=True)
    fractions = np.divide(counts, support, out=np.zeros(counts.shape), where=support > 0)
    overall = float((y_true == y_pred).mean()) if len(y_true) else 0.0
    present = support[:, 0] > 0
    mean_class = float(np.diag(fractions)[present].mean()) if present.any() else 0.0
    side = min(max(4.0, 0.32 * k + 2.5), 16.0)
    fig = new_figure(side + 1.2, side)
    ax = fig.add_subplot()
    image = ax.imshow(fractions, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(np.arange(k), class_names, rotation=60, ha="right", rotation_mode="anchor",
                  fontsize=8 if k <= 40 else 6)
    ax.set_yticks(np.arange(k), class_names, fontsize=8 if k <= 40 else 6)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if k <= ANNOTATE_MAX_CLASSES:
        for i, j in zip(*np.nonzero(counts)):
            ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=8,
                    color="white" if fractions[i, j] > 0.5 else "black")
    fig.colorbar(image, ax=ax, shrink=0.8, label="fraction of the true class")
    ax.set_title(title or f"Confusion matrix: overall accuracy {overall:.1%}, mean class accuracy {mean_class:.1%}")
    return fig
