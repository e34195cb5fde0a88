"""Inverse block multi-masking.

The *visible* context is block-shaped: the union of a few kNN blocks of patch centres, trimmed or
topped up at random so that every mask hides exactly round(ratio * P) patches (45 of 64). Each
global crop gets `num_masks` independent masks; rows are crop-major, then mask:
row = crop * num_masks + m.
"""

from __future__ import annotations

import torch
from torch import Tensor

from model.config import MaskCounts, MaskingConfig, mask_counts

__all__ = ["MaskCounts", "block_union", "inverse_block_mask", "mask_counts", "mask_from_union", "split_mask"]


def block_union(centers: Tensor, cfg: MaskingConfig, generator: torch.Generator | None = None) -> Tensor:
    """Candidate visible sets (C * num_masks, P): the union of the kNN blocks of n_s random seeds.

    Every row draws its own seeds; a block is a seed's k_b nearest patch centres, itself included.
    """
    c, p, _ = centers.shape
    counts = mask_counts(p, cfg)
    rows = c * cfg.num_masks
    dist = torch.cdist(centers.float(), centers.float(), compute_mode="donot_use_mm_for_euclid_dist")
    blocks = dist.topk(counts.block_size, dim=-1, largest=False).indices  # (C, P, k_b)
    blocks = blocks.repeat_interleave(cfg.num_masks, dim=0)
    seeds = torch.rand(rows, p, generator=generator, device=centers.device).argsort(dim=1)[:, : counts.num_seeds]
    members = blocks.gather(1, seeds[..., None].expand(-1, -1, counts.block_size)).flatten(1)
    return torch.zeros(rows, p, dtype=torch.bool, device=centers.device).scatter_(1, members, True)


def mask_from_union(in_blocks: Tensor, num_masked: int, generator: torch.Generator | None = None) -> Tensor:
    """Mask exactly `num_masked` patches per row, taking patches outside the blocks first.

    Patches outside the blocks rank first (keys in [0, 1)), block patches last (keys in [1, 2)), in
    random order within each group. So if the union holds at least P - n_m patches, the visible
    set lies inside it; otherwise the whole union stays visible plus random others.
    """
    rows, p = in_blocks.shape
    key = torch.rand(rows, p, generator=generator, device=in_blocks.device) + in_blocks.float()
    masked = key.argsort(dim=1)[:, :num_masked]
    return torch.zeros(rows, p, dtype=torch.bool, device=in_blocks.device).scatter_(1, masked, True)


def inverse_block_mask(
    centers: Tensor, cfg: MaskingConfig, generator: torch.Generator | None = None
) -> Tensor:
    """Boolean masks (C * num_masks, P), True = masked (a prediction target).

    centers: (C, P, 3) patch centres of C global crops.
    """
    num_masked = mask_counts(centers.shape[1], cfg).num_masked
    return mask_from_union(block_union(centers, cfg, generator), num_masked, generator)


def split_mask(mask: Tensor, num_visible: int) -> tuple[Tensor, Tensor]:
    """(visible_idx, masked_idx) per row, each in original (FPS) patch order.

    Every row must hide the same number of patches (`inverse_block_mask` guarantees it); the count
    is passed in rather than read from the mask to avoid a device sync.
    """
    order = mask.to(torch.uint8).argsort(dim=1, stable=True)
    return order[:, :num_visible], order[:, num_visible:]
