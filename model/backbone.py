"""What every backbone shares: padded clouds in, tokens out, and how tokens become a global embedding.

A backbone turns padded crops into its own input (`prepare`: the ViT cuts patches, a point network keeps
the normalised points) and that input into tokens (C, [1 +] T, D): the ViT's patch tokens behind its CLS
token, or a point network's per-point features. Training methods, evaluation protocols, exports and
`model.pretrained` go through this surface only, so each works for every backbone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from model.patchify import Patches, normalize_unit_sphere

Pooling = Literal["cls", "mean", "max"]


@dataclass
class PointCloud:
    """A point network's input: C crops normalised into the unit sphere, zero past their valid counts."""

    points: Tensor  # (C, N, 3)
    num_points: Tensor  # (C,)

    @property
    def valid(self) -> Tensor:
        """(C, N) bool: the points below each crop's count."""
        return torch.arange(self.points.shape[1], device=self.points.device) < self.num_points[:, None]

    @property
    def centers(self) -> Tensor:
        """Where each token sits: a point network has one token per point."""
        return self.points

    @property
    def center_idx(self) -> Tensor:
        """(C, N) the index of each token's point in its crop (padding rows point at their own slot)."""
        c, n, _ = self.points.shape
        return torch.arange(n, device=self.points.device).expand(c, n)


BackboneInput = Patches | PointCloud  # what `Backbone.prepare` returns: the ViT's patches or the points


class Backbone(nn.Module):
    """The common surface. Subclasses set `dim` (token width), `has_cls`, `has_patch_tokens` (tokens that
    attend to each other, which the attention pictures draw) and `embedding_pooling`, and implement
    `prepare` and `forward(inputs) -> (C, [1 +] T, D)`. `feature_pooling` is what evaluation pools by default.

    A point network's tokens include padded points' rows; those rows hold the mean of the valid rows, so
    mean and max pooling over all rows equal pooling over the valid points (`fill_padding`).
    """

    dim: int
    has_cls: bool
    has_patch_tokens: bool
    embedding_pooling: tuple[Pooling, ...]

    def prepare(self, points: Tensor, num_points: Tensor, num_patches: int, patch_size: int,
                center_idx: Tensor | None = None, patch_idx: Tensor | None = None,
                generator: torch.Generator | None = None) -> BackboneInput:
        """This backbone's input from padded crops (C, N, 3) and their counts (C,). The patch arguments
        are the ViT's (`model.patchify.patchify`); point networks ignore them."""
        raise NotImplementedError

    @property
    def feature_pooling(self) -> tuple[Pooling, ...]:
        """The pooling of frozen features for evaluation and `embed` when none is asked for."""
        return self.embedding_pooling

    @property
    def embedding_dim(self) -> int:
        """Width of the global embedding the training methods distil."""
        return self.dim * len(self.embedding_pooling)

    def embedding(self, tokens: Tensor) -> Tensor:
        """The global embedding (C, embedding_dim) of `forward`'s tokens."""
        return pool(tokens, self.has_cls, self.embedding_pooling)


def pool(tokens: Tensor, has_cls: bool, pooling: Sequence[Pooling]) -> Tensor:
    """Concatenate the requested poolings of (B, [1 +] T, D) tokens.

    As in the reference, when the CLS token exists but is not a feature of its own, it takes part in
    the mean and max pooling.
    """
    patches = tokens[:, 1:] if has_cls and "cls" in pooling else tokens
    parts = []
    for kind in pooling:
        if kind == "cls":
            if not has_cls:
                raise ValueError("pooling 'cls' needs an encoder with a CLS token (this one has none)")
            parts.append(tokens[:, 0])
        elif kind == "mean":
            parts.append(patches.mean(dim=1))
        else:
            parts.append(patches.amax(dim=1))
    return torch.cat(parts, dim=-1)


def fill_padding(features: Tensor, valid: Tensor) -> Tensor:
    """(C, N, D) per-point features with every padded row replaced by the mean of the valid rows.

    The mean of the filled rows is the valid rows' mean, and their max is the valid rows' max (a mean
    never exceeds the maximum), so pooling needs no mask.
    """
    mask = valid[..., None].to(features.dtype)
    mean = (features * mask).sum(1, keepdim=True) / mask.sum(1, keepdim=True).clamp_min(1)
    return torch.where(valid[..., None], features, mean)


class PointBackbone(Backbone):
    """A point network: one token per point, no CLS token. `prepare` normalises the crops and keeps every
    point; `forward(PointCloud)` returns (C, N, dim) with padded rows filled by `fill_padding`."""

    has_cls = False
    has_patch_tokens = False

    def prepare(self, points: Tensor, num_points: Tensor, num_patches: int = 0, patch_size: int = 0,
                center_idx: Tensor | None = None, patch_idx: Tensor | None = None,
                generator: torch.Generator | None = None) -> PointCloud:
        return PointCloud(normalize_unit_sphere(points, num_points), num_points)
