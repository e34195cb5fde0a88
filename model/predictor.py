"""Cross-attention-only predictor for masked point modeling.

There is no self-attention anywhere: every masked query attends only to the visible memory
[CLS, visible patches], never to another masked query (nor itself), so the set of masked centre
positions, which would reveal the shape, is not shared between queries. Each masked patch is
predicted from its own position and the visible context alone.
"""

from __future__ import annotations

from torch import Tensor, nn

from model.config import PredictorConfig
from model.layers import CrossBlock, RMSNorm


class Predictor(nn.Module):
    def __init__(self, encoder_dim: int, cfg: PredictorConfig, eps: float = 1e-5) -> None:
        super().__init__()
        # One input projection (with bias) for the mask token, the query positions and the memory.
        self.proj_in = nn.Linear(encoder_dim, cfg.dim)
        self.blocks = nn.ModuleList(CrossBlock(cfg.dim, cfg.num_heads, cfg.mlp_ratio, eps) for _ in range(cfg.depth))
        self.norm = RMSNorm(cfg.dim, eps)
        self.proj_out = nn.Linear(cfg.dim, encoder_dim)

    def forward(self, mask_token: Tensor, query_pe: Tensor, memory: Tensor) -> Tensor:
        """mask_token (1, 1, D); query_pe (R, Q, D) positional embeddings of the masked centres;
        memory (R, T, D) encoder outputs of the visible view. Returns (R, Q, D) predictions."""
        rows, num_queries, _ = query_pe.shape
        pe = self.proj_in(query_pe)
        mem = self.proj_in(memory)
        q = self.proj_in(mask_token).to(pe.dtype).expand(rows, num_queries, -1)
        for blk in self.blocks:
            q = blk(q + pe, mem)
        return self.proj_out(self.norm(q))
