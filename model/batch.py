"""The input contract between the data pipeline and the model: padded crops, optionally with patch indices.

The pipeline builds one `CropBatch` per sample and kind of crop (`stack` joins them); the model reads
them flattened crop by crop. Every transformation (device moves, pinning, slicing) is one `map`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields

import torch
from torch import Tensor


@dataclass
class CropBatch:
    """C padded crops per sample (the leading B is absent in a single sample's crops)."""

    points: Tensor  # (B, C, N, 3) float
    num_points: Tensor  # (B, C) int64, valid points per crop
    center_idx: Tensor | None = None  # (B, C, P) int64, precomputed FPS centres
    patch_idx: Tensor | None = None  # (B, C, P, K) int64, precomputed kNN groups

    def map(self, fn: Callable[[Tensor], Tensor]) -> CropBatch:
        """`fn` applied to every tensor that is present."""
        return CropBatch(*(None if t is None else fn(t) for t in (getattr(self, f.name) for f in fields(self))))

    @staticmethod
    def stack(samples: Sequence[CropBatch]) -> CropBatch:
        """Per-sample crops (no batch dimension) into one batch."""
        names = [f.name for f in fields(CropBatch)]
        columns = [[getattr(s, name) for s in samples] for name in names]
        return CropBatch(*(None if column[0] is None else torch.stack(column) for column in columns))


@dataclass
class MultiCropBatch:
    global_crops: CropBatch
    local_crops: CropBatch | None = None

    @property
    def batch_size(self) -> int:
        return self.global_crops.points.shape[0]

    def map(self, fn: Callable[[Tensor], Tensor]) -> MultiCropBatch:
        return MultiCropBatch(self.global_crops.map(fn), None if self.local_crops is None else self.local_crops.map(fn))

    def to(self, device: torch.device | str, non_blocking: bool = False) -> MultiCropBatch:
        return self.map(lambda t: t.to(device, non_blocking=non_blocking))

    def chunks(self, n: int) -> list[MultiCropBatch]:
        """`n` consecutive equal micro-batches (gradient accumulation); the batch size must divide."""
        b = self.batch_size
        if b % n:
            raise ValueError(f"batch of {b} samples does not split into {n} equal micro-batches")
        size = b // n
        return [self.map(lambda t, i=i: t[i * size:(i + 1) * size]) for i in range(n)]
