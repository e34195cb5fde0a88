"""`torch.compile` of the model's repeated regions, with static shapes and no graph breaks.

Each transformer block, predictor block, tokenizer, positional MLP and projection head is compiled
on its own (regional compilation) rather than the whole step: the 12-24 blocks of an encoder share
one compiled graph per input shape (parameters are graph inputs), so compile time stays at seconds
while the kernels inside a block are still fused. `fullgraph=True` turns any graph break inside a
region into an error instead of a silent fall-back to eager. Shapes are static (`dynamic=False`):
every crop kind has a fixed token count, so each region compiles once per shape it sees.
"""

from __future__ import annotations

import torch
from torch import nn

from model.encoder import PointPatchEmbed, PositionEmbedding
from model.heads import DINOHead
from model.layers import Block, CrossBlock

REGIONS = (Block, CrossBlock, PointPatchEmbed, PositionEmbedding, DINOHead)

# One compiled graph per (region code, input shape); the encoder sees up to ~5 token counts
# (global, masked views, local, teacher) and the heads a few row counts.
_RECOMPILE_LIMIT = 64


def compile_regions(module: nn.Module) -> int:
    """Compile every region of `module` in place (the state-dict keys do not change); returns how many."""
    _raise_recompile_limit()
    count = 0
    for sub in module.modules():
        if isinstance(sub, REGIONS):
            sub.compile(fullgraph=True, dynamic=False)
            count += 1
    return count


def _raise_recompile_limit() -> None:
    config = torch._dynamo.config
    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
    setattr(config, name, max(getattr(config, name), _RECOMPILE_LIMIT))
