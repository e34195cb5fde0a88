"""Per-point layers the point networks (`model.pointnet`, `model.dgcnn`) share: batch norm over the valid
rows of padded crops, and linear + batch norm + activation."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class MaskedBatchNorm(nn.Module):
    """Batch norm over the channel (last) dimension whose training statistics come from valid rows only.

    Padded points must not shift the statistics, or a crop's features would depend on how far its batch
    was padded. Otherwise it is `nn.BatchNorm1d`: biased batch variance to normalise, the unbiased one in
    the running estimate (momentum 0.1), running statistics in eval mode, and the same parameters and
    buffers. Statistics are computed in at least fp32 and the input dtype is returned, as `RMSNorm` does.
    """

    def __init__(self, dim: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        self.eps = eps
        self.momentum = momentum
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.register_buffer("running_mean", torch.zeros(dim))
        self.register_buffer("running_var", torch.ones(dim))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def forward(self, x: Tensor, valid: Tensor) -> Tensor:
        """x (..., C); valid: bool, broadcastable to x's leading dimensions, True for the rows to count.

        Invalid rows are normalised like the others but may hold anything (even non-finite values)
        without touching the valid rows. The count is kept on the device (no host sync); a batch with
        a single valid row gets a running variance estimate of 0 where torch's batch norm would raise.
        """
        y = x.to(torch.promote_types(x.dtype, torch.float32))
        if self.training:
            rows = valid.expand(x.shape[:-1])[..., None]
            dims = tuple(range(x.dim() - 1))
            count = rows.sum(dims).clamp_min(1)
            mean = torch.where(rows, y, 0).sum(dims) / count
            y = y - mean
            var = torch.where(rows, y.square(), 0).sum(dims) / count
            with torch.no_grad():
                unbiased = var * count / (count - 1).clamp_min(1)
                self.running_mean.mul_(1 - self.momentum).add_(self.momentum * mean)
                self.running_var.mul_(1 - self.momentum).add_(self.momentum * unbiased)
                self.num_batches_tracked.add_(1)
        else:
            mean, var = self.running_mean, self.running_var
            y = y - mean
        return (y * (self.weight * torch.rsqrt(var + self.eps)) + self.bias).to(x.dtype)


class PointLayer(nn.Module):
    """One per-point layer: linear -> masked batch norm -> activation on (..., C_in) features."""

    def __init__(self, in_dim: int, out_dim: int, bias: bool, activation: nn.Module) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim, bias=bias)
        self.norm = MaskedBatchNorm(out_dim)
        self.activation = activation

    def forward(self, x: Tensor, valid: Tensor) -> Tensor:
        return self.activation(self.norm(self.linear(x), valid))
