"""Writing a picture: PNG (and PDF / SVG for reports) on disk and, for a tracked run, each file as an MLflow artifact."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure

ARTIFACT_DIR = "pictures"
DPI = 150
FORMATS = ("png", "pdf", "svg")  # a raster for browsing, vector files for a report
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def save_figure(fig: Figure, out_dir: str | os.PathLike, name: str, mlflow_run_id: str | None = None,
                tracking_uri: str | None = None, formats: Sequence[str] = ("png",)) -> list[Path]:
    """Write `out_dir/name.<format>` for each of `formats` (Agg, 150 dpi, tight) and log every file written
    under `pictures/` of the MLflow run if given; returns the paths, one per format, in the order given.

    `name` is a plain file stem (letters, digits, '_', '-', '.'), so a picture can never be written
    outside `out_dir` or into a nested artifact path by accident. `tracking_uri` defaults to MLflow's
    own resolution ($MLFLOW_TRACKING_URI).
    """
    if not NAME.fullmatch(name):
        raise ValueError(f"picture name {name!r} must be a plain file stem (letters, digits, '_', '-', '.')")
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ValueError(f"formats must be a non-empty selection of {FORMATS}, got {list(formats)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in dict.fromkeys(formats):
        path = out / f"{name}.{fmt}"
        fig.savefig(path, format=fmt, dpi=DPI, bbox_inches="tight", facecolor="white")
        paths.append(path)
    if mlflow_run_id is not None:
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri)
        for path in paths:
            client.log_artifact(mlflow_run_id, str(path), ARTIFACT_DIR)
    return paths
