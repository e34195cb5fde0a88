"""Momentum centering of teacher logits (reference section 5.3)."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn


class Centering(nn.Module):
    """c <- m c + (1 - m) mean(logits); the current batch is centred with the *old* centre.

    The batch mean is averaged over ranks when torch.distributed is initialised, so every rank keeps
    the same centre.
    """

    def __init__(self, dim: int, momentum: float) -> None:
        super().__init__()
        self.momentum = momentum
        self.register_buffer("center", torch.zeros(dim))

    @torch.no_grad()
    def forward(self, logits: Tensor) -> Tensor:
        """Centred logits (fp32), then the centre update with this batch."""
        logits = logits.float()
        centered = logits - self.center
        self.update(logits)
        return centered

    @torch.no_grad()
    def update(self, logits: Tensor) -> None:
        batch_mean = logits.reshape(-1, logits.shape[-1]).float().mean(dim=0)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(batch_mean)  # SUM then divide: ReduceOp.AVG is not available on gloo
            batch_mean /= dist.get_world_size()
        self.center.mul_(self.momentum).add_(batch_mean, alpha=1.0 - self.momentum)
