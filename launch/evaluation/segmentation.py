"""Part segmentation on top of a pretrained encoder, as the official AsymDSD code does it
(remcofl/AsymDSD, `asymdsd/models/semantic_segmentation.py`, `asymdsd/layers/point_upsampling.py`).

The encoder's outputs after a third, two thirds and all of its blocks (blocks 4, 8 and 12 of S/B)
pass through one shared LayerNorm and are concatenated per patch. Every point gets that feature
interpolated from its 3 nearest patch centres (inverse squared distance), next to its coordinates,
through an MLP; the shape's global feature (an object-category embedding, the CLS output, and mean and
max of the concatenated patch features) is appended to every point, and an MLP head scores the parts.
The pointwise MLPs run on the valid points only, so BatchNorm never sees padding. The head's first linear
is split: its global half is computed once per shape and added to each point's local half, the same maths
as concatenating with about a third of that layer's work (BENCHMARKS.md).

A point network (PointNet, DGCNN) already has a feature at every point: `PointPartSegmenter` puts the same
category embedding and head on each point's token next to the shape's global embedding, as the PointNet and
DGCNN segmentation networks join per-point and global features.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from launch.evaluation.features import Augmentation, augment
from model.backbone import Backbone
from model.encoder import PointEncoder
from model.features import InputSpec
from model.patchify import normalize_unit_sphere, patchify, valid_mask


def default_blocks(depth: int) -> tuple[int, ...]:
    """The blocks whose outputs feed the head: a third, two thirds and all of the depth (4, 8, 12 of 12)."""
    return tuple(sorted({max(1, round(depth * k / 3)) for k in (1, 2, 3)}))


def pointwise_mlp(dims: Sequence[int], dropout_after_first: float = 0.0, out: int | None = None) -> nn.Sequential:
    """Linear (no bias) -> BatchNorm -> GELU per width, on (M, C) points; then a Linear with bias to `out`."""
    layers: list[nn.Module] = []
    for i in range(len(dims) - 1):
        layers += [nn.Linear(dims[i], dims[i + 1], bias=False), nn.BatchNorm1d(dims[i + 1]), nn.GELU()]
        if i == 0 and dropout_after_first:
            layers.append(nn.Dropout(dropout_after_first))
    if out is not None:
        layers.append(nn.Linear(dims[-1], out))
    return nn.Sequential(*layers)


def interpolate(points: Tensor, centers: Tensor, features: Tensor, k: int = 3) -> Tensor:
    """(B, N, F) features at `points` (B, N, 3): the inverse-squared-distance average over the k nearest of
    `centers` (B, P, 3) with `features` (B, P, F)."""
    if centers.shape[1] == 1:
        return features.expand(-1, points.shape[1], -1)
    dist = (points[:, :, None] - centers[:, None]).square().sum(-1)
    dist, idx = dist.topk(min(k, centers.shape[1]), dim=-1, largest=False)
    weight = 1.0 / (dist + torch.finfo(dist.dtype).eps)
    weight = weight / weight.sum(-1, keepdim=True)
    gathered = torch.gather(features[:, None].expand(-1, points.shape[1], -1, -1), 2,
                            idx[..., None].expand(-1, -1, -1, features.shape[-1]))
    return (gathered * weight[..., None].to(features.dtype)).sum(2)


def split_first_linear(head: nn.Sequential, local: Tensor, glob: Tensor, shape_of_point: Tensor) -> Tensor:
    """The head's first linear on [local (M, U), glob (B, G) of each point's shape]: split, not concatenated."""
    weight = head[0].weight
    u = local.shape[-1]
    return F.linear(local, weight[:, :u]) + F.linear(glob, weight[:, u:])[shape_of_point]


def scatter_valid(scores: Tensor, valid: Tensor) -> Tensor:
    """(B, N, parts) logits from the scores of the valid points; padded points score zeros."""
    logits = scores.new_zeros(*valid.shape, scores.shape[-1])
    logits[valid] = scores
    return logits


class PartSegmenter(nn.Module):
    """Encoder + multi-block patch features + point upsampling + category embedding + MLP head."""

    def __init__(self, encoder: PointEncoder, num_categories: int, num_parts: int, spec: InputSpec,
                 blocks: Sequence[int] | None = None, upsampling_dim: int = 384, label_embed_dim: int = 64,
                 head_dims: Sequence[int] = (512, 256), dropout: float = 0.5) -> None:
        super().__init__()
        if not encoder.has_cls:
            raise ValueError("part segmentation reads the CLS output: this encoder has no CLS token")
        self.encoder = encoder
        self.spec = spec
        self.blocks = tuple(blocks or default_blocks(len(encoder.blocks)))
        d = encoder.dim
        self.layer_norm = nn.LayerNorm(d)
        self.upsample = pointwise_mlp([3 + d * len(self.blocks), upsampling_dim, upsampling_dim])
        self.label_embedding = nn.Embedding(num_categories, label_embed_dim)
        in_dim = upsampling_dim + label_embed_dim + d + 2 * d * len(self.blocks)
        self.head = pointwise_mlp([in_dim, *head_dims], dropout, out=num_parts)  # PyTorch's default init, as the reference

    def forward(self, points: Tensor, num_points: Tensor, categories: Tensor, generator: torch.Generator,
                aug: Augmentation | None = None) -> Tensor:
        """Part logits (B, N, parts) for (B, N, 3) clouds already subsampled; padded points score zeros."""
        if aug is not None and aug.active:
            points = augment(points, aug, generator)
        points = normalize_unit_sphere(points, num_points)  # patchify's frame: centres and points agree
        patches = patchify(points, num_points, self.spec.num_patches, self.spec.patch_size, generator=generator)
        final, hidden = self.encoder.forward_with_blocks(patches, self.blocks)
        patch_feats = torch.cat([self.layer_norm(h[:, 1:]) for h in hidden], dim=-1)
        glob = torch.cat([self.label_embedding(categories), final[:, 0], patch_feats.mean(1), patch_feats.amax(1)],
                         dim=-1)
        valid = valid_mask(num_points, points.shape[1])
        local = torch.cat([points, interpolate(points, patches.centers, patch_feats)], dim=-1)[valid]
        scores = self.head[1:](split_first_linear(self.head, self.upsample(local), glob, valid.nonzero()[:, 0]))
        return scatter_valid(scores, valid)


class PointPartSegmenter(nn.Module):
    """A point network + category embedding + MLP head on [each point's token, the shape's global feature]."""

    def __init__(self, encoder: Backbone, num_categories: int, num_parts: int, label_embed_dim: int = 64,
                 head_dims: Sequence[int] = (512, 256), dropout: float = 0.5) -> None:
        super().__init__()
        self.encoder = encoder
        self.label_embedding = nn.Embedding(num_categories, label_embed_dim)
        in_dim = encoder.dim + label_embed_dim + encoder.embedding_dim
        self.head = pointwise_mlp([in_dim, *head_dims], dropout, out=num_parts)

    def forward(self, points: Tensor, num_points: Tensor, categories: Tensor, generator: torch.Generator,
                aug: Augmentation | None = None) -> Tensor:
        """Part logits (B, N, parts) for (B, N, 3) clouds already subsampled; padded points score zeros."""
        if aug is not None and aug.active:
            points = augment(points, aug, generator)
        tokens = self.encoder(self.encoder.prepare(points, num_points))
        glob = torch.cat([self.label_embedding(categories), self.encoder.embedding(tokens)], dim=-1)
        valid = valid_mask(num_points, points.shape[1])
        scores = self.head[1:](split_first_linear(self.head, tokens[valid], glob, valid.nonzero()[:, 0]))
        return scatter_valid(scores, valid)
