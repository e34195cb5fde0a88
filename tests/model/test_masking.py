"""Inverse block multi-masking: exact counts, block-shaped visible context, independent masks."""

from __future__ import annotations

import pytest
import torch

from model.config import MaskingConfig
from model.masking import block_union, inverse_block_mask, mask_counts, mask_from_union, split_mask


def line_centers(crops: int, p: int, torch_rng: torch.Generator) -> torch.Tensor:
    """Centres on a line with irregular gaps: every kNN block is a run of consecutive ranks."""
    x = torch.cumsum(torch.rand(crops, p, generator=torch_rng) + 0.1, dim=1)
    return torch.stack([x, torch.zeros_like(x), torch.zeros_like(x)], dim=-1)


def runs_needed(ranks: list[int], width: int) -> int:
    """Fewest intervals of `width` consecutive ranks that cover `ranks` (greedy is optimal)."""
    count, covered_until = 0, -1
    for r in sorted(ranks):
        if r > covered_until:
            count += 1
            covered_until = r + width - 1
    return count


@pytest.mark.parametrize(
    "p, masked, visible, block, seeds",
    [(64, 45, 19, 6, 4), (128, 90, 38, 12, 4), (16, 11, 5, 1, 6), (32, 22, 10, 3, 4)],
)
def test_counts_follow_the_reference_formula(p, masked, visible, block, seeds):
    counts = mask_counts(p, MaskingConfig())
    assert (counts.num_masked, counts.num_visible, counts.block_size, counts.num_seeds) == (
        masked,
        visible,
        block,
        seeds,
    )


def test_every_mask_hides_exactly_45_of_64(torch_rng):
    cfg = MaskingConfig()
    mask = inverse_block_mask(torch.randn(10, 64, 3, generator=torch_rng), cfg, torch_rng)
    assert mask.shape == (40, 64)
    assert mask.sum(1).tolist() == [45] * 40


def test_union_is_made_of_knn_blocks(torch_rng):
    cfg = MaskingConfig()
    centers = line_centers(8, 64, torch_rng)  # already sorted along x, so rank == index
    union = block_union(centers, cfg, torch_rng)
    for row in union:
        members = row.nonzero().flatten().tolist()
        assert runs_needed(members, 6) <= 4
        assert 6 <= len(members) <= 24


def test_visible_context_lies_inside_the_blocks(torch_rng):
    cfg = MaskingConfig()
    union = block_union(torch.randn(50, 64, 3, generator=torch_rng), cfg, torch_rng)
    mask = mask_from_union(union, 45, torch_rng)
    for u, m in zip(union, mask):
        visible = ~m
        if u.sum() >= 19:
            assert not torch.any(visible & ~u)  # visible subset of the blocks
        else:
            assert not torch.any(u & m)  # small union: all of it stays visible


def test_masks_of_one_crop_differ_and_rows_are_crop_major(torch_rng):
    cfg = MaskingConfig(num_masks=4)
    centers = torch.randn(3, 64, 3, generator=torch_rng)
    mask = inverse_block_mask(centers, cfg, torch_rng)
    for crop in range(3):
        rows = mask[crop * 4 : crop * 4 + 4]
        assert len({tuple(r.tolist()) for r in rows}) == 4
    # Row order is crop-major (row = crop * M + m): crop 0's centres lie on a line in index order
    # (its blocks are runs of indices), crop 1's are shuffled (its blocks are scattered).
    line = line_centers(2, 64, torch_rng)
    line[1] = line[1][torch.randperm(64, generator=torch_rng)]
    union = block_union(line, cfg, torch_rng)
    assert all(runs_needed(r.nonzero().flatten().tolist(), 6) <= 4 for r in union[:4])
    assert any(runs_needed(r.nonzero().flatten().tolist(), 6) > 4 for r in union[4:])


def test_split_mask_keeps_fps_order(torch_rng):
    mask = inverse_block_mask(torch.randn(2, 64, 3, generator=torch_rng), MaskingConfig(), torch_rng)
    visible, masked = split_mask(mask, 19)
    assert visible.shape == (8, 19) and masked.shape == (8, 45)
    assert torch.all(visible.diff(dim=1) > 0) and torch.all(masked.diff(dim=1) > 0)
    assert not mask.gather(1, visible).any() and mask.gather(1, masked).all()


def test_bad_ratio_is_rejected():
    with pytest.raises(ValueError, match="ratio"):
        mask_counts(4, MaskingConfig(ratio=0.01))
