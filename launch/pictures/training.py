"""Curves of a pretraining run from its MLflow metric history: losses, learning rate, monitor accuracies."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from launch.pictures.panels import new_figure

LR_KEY = "opt/lr"  # the learning rate, as the pretraining job logs it
LOSS_PREFIX = "loss/"
MONITOR = re.compile(r"monitor/[^/]+/(svm|knn)")  # a probe's accuracy curve (not its /best or /seconds)
PROTOCOL_NAMES = {"svm": "linear SVM", "knn": "k-NN"}
History = Mapping[str, Sequence[tuple[int, float]]]


def curve_keys(available: Sequence[str]) -> list[str]:
    """The run's `loss/*` keys, `loss/total` first, the learning rate if it was logged, then the monitor accuracies."""
    losses = sorted(k for k in available if k.startswith(LOSS_PREFIX))
    losses.sort(key=lambda k: k != f"{LOSS_PREFIX}total")
    monitors = sorted(k for k in available if MONITOR.fullmatch(k))
    return losses + ([LR_KEY] if LR_KEY in available else []) + monitors


def panel_title(key: str) -> str:
    if key == LR_KEY:
        return "learning rate"
    if MONITOR.fullmatch(key):
        _, name, protocol = key.split("/")
        return f"{name}: {PROTOCOL_NAMES[protocol]} accuracy"
    return key


def loss_history_from_mlflow(run_id: str, keys: Sequence[str] | None = None,
                             tracking_uri: str | None = None) -> dict[str, list[tuple[int, float]]]:
    """{key: [(step, value), ...] in step order} of an MLflow run (default keys: `curve_keys` of the run).

    `tracking_uri` defaults to MLflow's own resolution ($MLFLOW_TRACKING_URI).
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri)
    try:
        run = client.get_run(run_id)
    except MlflowException as err:
        raise ValueError(f"MLflow run {run_id!r} not found at {client.tracking_uri}: {err.message}") from None
    logged = set(run.data.metrics)
    wanted = list(keys) if keys is not None else curve_keys(sorted(logged))
    missing = [k for k in wanted if k not in logged]
    if missing or not wanted:
        raise ValueError(f"MLflow run {run_id!r} has no metric {missing or 'loss/*'}; it logged {sorted(logged)}")
    history = {}
    for key in wanted:
        points = sorted((m.step, m.timestamp, m.value) for m in client.get_metric_history(run_id, key))
        latest = {step: value for step, _, value in points}  # a resumed run may log a step twice: keep the last
        history[key] = sorted(latest.items())
    return history


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average over `window` values (fewer at the ends), same length as `values`.

    Centred rather than trailing, so the trend is not drawn late against the raw curve.
    """
    sums = np.cumsum(np.insert(values, 0, 0.0))
    idx = np.arange(len(values))
    start = np.maximum(idx - window // 2, 0)
    stop = np.minimum(idx + window - window // 2, len(values))
    return (sums[stop] - sums[start]) / (stop - start)


def loss_curves_figure(history: History, title: str | None = None) -> Figure:
    """One panel per metric (small multiples sharing the step axis): the raw values and, for long loss
    curves, a moving average over 1/20 of the run so the trend is visible through step noise (the
    learning rate is a schedule, not noisy: it is drawn as logged; monitor accuracies are drawn in percent).
    """
    series = {k: np.asarray(v, dtype=np.float64).reshape(-1, 2) for k, v in history.items()}
    empty = [k for k, v in series.items() if len(v) == 0]
    if not series or empty:
        raise ValueError(f"history needs at least one metric with values; empty: {empty or 'no metrics'}")
    cols = min(3, len(series))
    rows = math.ceil(len(series) / cols)
    fig = new_figure(4.2 * cols, 3.0 * rows + 0.4)
    axes = fig.subplots(rows, cols, sharex=True, squeeze=False).ravel()
    for ax, (key, data) in zip(axes, series.items()):
        steps, values = data[:, 0], data[:, 1]
        accuracy = MONITOR.fullmatch(key) is not None
        if accuracy:
            values = 100 * values
        noisy = len(values) > 20 and key != LR_KEY and not accuracy
        ax.plot(steps, values, color="tab:blue", lw=0.8 if noisy else 1.5, alpha=0.45 if noisy else 1.0,
                marker="o" if len(values) <= 20 else None, ms=3, label="logged")
        if noisy:
            ax.plot(steps, smooth(values, max(len(values) // 20, 2)), color="tab:blue", lw=1.8, label="moving average")
            ax.legend(fontsize=7, frameon=False)
        ax.set_title(panel_title(key), fontsize=10)
        if accuracy:
            ax.set_ylabel("%")
        ax.grid(alpha=0.3)
        if key == LR_KEY:
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    for ax in axes[len(series):]:
        ax.remove()  # a grid cell without a metric: no empty frame in the picture
    for ax in axes[max(len(series) - cols, 0):len(series)]:
        ax.set_xlabel("step")
        ax.tick_params(labelbottom=True)
    fig.suptitle(title or "Pretraining curves")
    return fig
