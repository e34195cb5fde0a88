"""Pretrained encoders in two lines: `from_pretrained` loads one, `embed` turns raw clouds into features.

    encoder = from_pretrained("runs/demo/export")
    feats = encoder.embed(points)  # (B, F) CLS + mean features, as the SVM protocol computes them

`embed` runs `model.features`'s steps (subsample, patchify, encode, pool), the evaluation protocols' own.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple, overload

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pad_sequence

from configuration.extras import require
from model.config import ModelConfig
from model.export import load_encoder
from model.backbone import Backbone, Pooling, pool
from model.features import InputSpec, encode, model_input, subsample
from model.official import load_official_encoder

MLFLOW_SCHEMES = ("runs:/", "mlflow-artifacts:/")

Cloud = np.ndarray | Tensor
Clouds = Cloud | Sequence[Cloud]


class Embedding(NamedTuple):
    """What `embed(..., return_tokens=True)` returns."""

    features: Tensor  # (B, F) pooled global features
    tokens: Tensor  # (B, T, D) per-patch (ViT) or per-point encoder outputs, the CLS token left out
    centers: Tensor  # (B, T, 3) where each token sits, in the input's coordinates


def as_batch(points: Clouds, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Zero-padded (B, N, 3) clouds on `device` and their point counts (B,), from one (N, 3) cloud, a
    (B, N, 3) batch, or a sequence of (N_i, 3) clouds of any sizes."""
    if isinstance(points, (list, tuple)):
        clouds = [torch.as_tensor(c).to(device=device, dtype=dtype) for c in points]
    else:
        batch = torch.as_tensor(points).to(device=device, dtype=dtype)
        if batch.ndim not in (2, 3):
            raise ValueError(f"points have shape {tuple(batch.shape)}; expected (N, 3), (B, N, 3) or a list of clouds")
        clouds = list(batch.reshape(-1, *batch.shape[-2:]))
    if not clouds:
        raise ValueError("no point clouds given")
    for i, cloud in enumerate(clouds):
        if cloud.ndim != 2 or cloud.shape[1] != 3 or cloud.shape[0] == 0:
            raise ValueError(f"cloud {i} has shape {tuple(cloud.shape)}; expected (N, 3) points with N >= 1")
    counts = torch.tensor([len(c) for c in clouds], device=device)
    return pad_sequence(clouds, batch_first=True), counts


class PretrainedEncoder(nn.Module):
    """A pretrained backbone with the input geometry and pooling that turn raw clouds into features.

    A wrapper rather than a backbone method: the bare module knows neither its model config's patch
    geometry nor where its weights came from. Calling the wrapper is `embed`. `pooling` defaults to the
    backbone's feature pooling, the SVM protocol's: CLS + mean for the ViT (mean + max without a CLS
    token), max for PointNet, max + mean for DGCNN.
    """

    def __init__(self, encoder: Backbone, config: ModelConfig, metadata: dict[str, Any] | None = None,
                 spec: InputSpec | None = None, pooling: Sequence[Pooling] | None = None) -> None:
        super().__init__()
        self.encoder = encoder
        self.config = config
        self.metadata = metadata or {}
        self.spec = spec or model_input(config)
        self.pooling = tuple(pooling or encoder.feature_pooling)
        self.eval()

    @overload
    def embed(self, points: Clouds, *, return_tokens: Literal[False] = ..., seed: int = ...) -> Tensor: ...

    @overload
    def embed(self, points: Clouds, *, return_tokens: Literal[True], seed: int = ...) -> Embedding: ...

    @torch.no_grad()
    def embed(self, points: Clouds, *, return_tokens: bool = False, seed: int = 0) -> Tensor | Embedding:
        """Global features (B, F) of raw clouds: numpy or torch, one (N, 3) cloud (B = 1), a (B, N, 3)
        batch, or a list of clouds of different sizes, on any device.

        Each cloud is FPS'd to `spec.num_points` (kept whole if smaller), centred and scaled into the unit
        sphere, cut into `spec.num_patches` patches of `spec.patch_size` points (the ViT's), encoded in eval
        mode, and pooled (`pooling`). `seed` fixes the FPS starts, so the same input gives the same features.
        With `return_tokens`, an `Embedding` that adds the per-token outputs and where they sit: the patch
        centres, or for a point network the subsampled points (padded slots of a shorter cloud included).
        """
        param = next(self.encoder.parameters())
        clouds, counts = as_batch(points, param.device, param.dtype)
        generator = torch.Generator(device=param.device).manual_seed(seed)
        was_training = self.encoder.training
        self.encoder.eval()
        try:
            clouds, counts = subsample(clouds, counts, self.spec, generator)
            tokens, inputs = encode(self.encoder, clouds, counts, self.spec, generator)
        finally:
            self.encoder.train(was_training)
        features = pool(tokens, self.encoder.has_cls, self.pooling).float()
        if not return_tokens:
            return features
        centers = clouds.gather(1, inputs.center_idx[..., None].expand(-1, -1, 3))
        patch_tokens = tokens[:, 1:] if self.encoder.has_cls else tokens
        return Embedding(features, patch_tokens.float(), centers)

    def forward(self, points: Clouds, *, return_tokens: bool = False, seed: int = 0) -> Tensor | Embedding:
        return self.embed(points, return_tokens=return_tokens, seed=seed)


def download(uri: str, dst: str, tracking_uri: str | None = None) -> Path:
    """An MLflow artifact directory (`runs:/<run_id>/encoder`, `mlflow-artifacts:/...`) copied under `dst`."""
    artifacts = require("mlflow.artifacts", "train")
    return Path(artifacts.download_artifacts(artifact_uri=uri, dst_path=dst, tracking_uri=tracking_uri))


def from_pretrained(path: str | os.PathLike, device: str | torch.device = "cpu", *,
                    tracking_uri: str | None = None, num_points: int = 1024) -> PretrainedEncoder:
    """A ready encoder in eval mode from an export directory (`model.export`), an MLflow artifact URI of
    one (`runs:/<run_id>/encoder` from `tracking_uri`, by default MLflow's own; needs the `train` extra's
    MLflow), or a published AsymDSD Lightning
    checkpoint (`.ckpt`, its teacher). `embed` then FPS's clouds to `num_points`, in the model's patch
    geometry (`model.features.model_input`). `metadata` is the export's or checkpoint's provenance plus
    `loaded_from`, the `path` given.
    """
    source = str(path)
    if source.startswith(MLFLOW_SCHEMES):
        with tempfile.TemporaryDirectory() as tmp:
            encoder, cfg, meta = load_encoder(download(source, tmp, tracking_uri), device)
    elif Path(source).is_dir():
        encoder, cfg, meta = load_encoder(source, device)
    elif Path(source).is_file():
        encoder, cfg, meta = load_official_encoder(source, device=device)
    else:
        raise FileNotFoundError(f"{source} is neither an export directory, a checkpoint file, nor an MLflow "
                                f"artifact URI ({', '.join(s + '...' for s in MLFLOW_SCHEMES)})")
    return PretrainedEncoder(encoder, cfg, {**meta, "loaded_from": source}, model_input(cfg, num_points))
