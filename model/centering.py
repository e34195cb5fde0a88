"""Momentum centering of teacher logits."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn


class Centering(nn.Module):
    """c <- m c + (1 - m) mean(logits), once per optimizer step; batches are centred with the old centre.

    The forward only centres and accumulates the batch's row sum; `commit()` applies the update with the
    mean over every row seen since the last commit, summed over ranks when torch.distributed is
    initialised. With one forward per optimizer step this is the reference's per-batch update. Under
    gradient accumulation it makes the centre a function of the optimizer step's global batch, so a run
    with k micro-batches per step equals one with k times the ranks (an immediate update would move the
    centre between micro-batches). A step that is skipped (non-finite loss) calls `discard()`, so a NaN
    never reaches the centre, which would poison every later target.
    """

    def __init__(self, dim: int, momentum: float) -> None:
        super().__init__()
        self.momentum = momentum
        self.register_buffer("center", torch.zeros(dim))
        self._sum: Tensor | None = None
        self._rows = 0

    @torch.no_grad()
    def forward(self, logits: Tensor) -> Tensor:
        """Centred logits (fp32); the batch is remembered for the next `commit()`."""
        logits = logits.float()
        rows = logits.reshape(-1, logits.shape[-1])
        batch_sum = rows.sum(dim=0)
        self._sum = batch_sum if self._sum is None else self._sum + batch_sum
        self._rows += rows.shape[0]
        return logits - self.center

    @torch.no_grad()
    def commit(self) -> None:
        """Update the centre with everything accumulated since the last commit (a collective when distributed)."""
        if self._sum is None:
            return
        totals = torch.cat([self._sum, self._sum.new_tensor([float(self._rows)])])
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(totals)  # SUM: ReduceOp.AVG is not available on gloo
        mean = totals[:-1] / totals[-1]
        self.center.mul_(self.momentum).add_(mean, alpha=1.0 - self.momentum)
        self.discard()

    def discard(self) -> None:
        self._sum, self._rows = None, 0
