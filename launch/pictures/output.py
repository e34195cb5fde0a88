"""Writing a picture: a PNG on disk and, for a tracked run, the same file as an MLflow artifact."""

from __future__ import annotations

import os
import re
from pathlib import Path

from matplotlib.figure import Figure

ARTIFACT_DIR = "pictures"
DPI = 150
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def save_figure(fig: Figure, out_dir: str | os.PathLike, name: str, mlflow_run_id: str | None = None,
                tracking_uri: str | None = None) -> Path:
    """Write `out_dir/name.png` (Agg, 150 dpi, tight) and log it under `pictures/` of the MLflow run if given.

    `name` is a plain file stem (letters, digits, '_', '-', '.'), so a picture can never be written
    outside `out_dir` or into a nested artifact path by accident. `tracking_uri` defaults to MLflow's
    own resolution ($MLFLOW_TRACKING_URI).
    """
    if not NAME.fullmatch(name):
        raise ValueError(f"picture name {name!r} must be a plain file stem (letters, digits, '_', '-', '.')")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.png"
    fig.savefig(path, format="png", dpi=DPI, bbox_inches="tight", facecolor="white")
    if mlflow_run_id is not None:
        from mlflow import MlflowClient

        MlflowClient(tracking_uri).log_artifact(mlflow_run_id, str(path), ARTIFACT_DIR)
    return path
