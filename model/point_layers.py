"""Per-point layers the point networks (`model.pointnet`, `model.dgcnn`) share: batch norm over the valid
rows of padded crops, and linear + batch norm + activation."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable


def mask_layout(valid: Tensor, shape: torch.Size) -> tuple[Tensor, tuple[int, ...], int]:
    """The mask as (..., 1) over x of `shape` (..., F), the leading dims it broadcasts over, and how many
    rows each mask entry covers: a (C, N, 1) mask over (C, N, k, F) edges has an entry per point for k rows."""
    lead = shape[:-1]
    mask = valid.reshape((1,) * (len(lead) - valid.dim()) + valid.shape)
    groups = tuple(i for i, (m, s) in enumerate(zip(mask.shape, lead)) if m == 1 and s > 1)
    return mask[..., None], groups, math.prod(lead[i] for i in groups)


def per_entry(t: Tensor, groups: tuple[int, ...], dtype: torch.dtype) -> Tensor:
    """t summed over the rows of each mask entry, in `dtype`; t itself when an entry is one row."""
    return t.sum(groups, keepdim=True, dtype=dtype) if groups else t


def valid_sum(entries: Tensor, mask: Tensor, scratch: Tensor) -> Tensor:
    """Per-channel sum of `per_entry` sums over the entries the mask keeps, whatever the others hold
    (non-finite included). Full-size entries are masked into `scratch` instead of a new tensor; the zero is
    one-dimensional so that low-precision entries are promoted to the scratch's dtype."""
    zero = scratch.new_zeros(1)
    masked = torch.where(mask, entries, zero, out=scratch if entries.shape == scratch.shape else None)
    return masked.sum(tuple(range(entries.dim() - 1)))


class MaskedBatchNormFunction(torch.autograd.Function):
    """Train-mode masked batch norm with an analytic backward; see `masked_batch_norm`.

    Each pass over the (..., F) rows is one op, the sums over the rows of a mask entry come first (one
    per point, not per edge), and a single full-size buffer is allocated each way: the output forward,
    the input gradient backward; both serve as scratch before that.
    """

    @staticmethod
    def forward(ctx, x: Tensor, valid: Tensor, weight: Tensor, bias: Tensor, eps: float):
        mask, groups, size = mask_layout(valid, x.shape)
        dtype = torch.promote_types(x.dtype, torch.float32)
        count = mask.sum() * size
        n = count.clamp_min(1)
        buf = torch.empty(x.shape, dtype=dtype, device=x.device)
        # Two passes: the mean, then the mean square of the centred rows.
        mean = valid_sum(per_entry(x, groups, dtype), mask, buf) / n
        torch.sub(x, mean, out=buf).square_()
        var = valid_sum(per_entry(buf, groups, dtype), mask, buf) / n
        invstd = torch.rsqrt(var + eps)
        scale = weight * invstd
        out = torch.addcmul(bias - mean * scale, x, scale, out=buf).to(x.dtype)
        ctx.save_for_backward(x, mask, weight, mean, invstd, count)
        ctx.groups = groups
        unbiased = var * count / (count - 1).clamp_min(1)
        ctx.mark_non_differentiable(mean, unbiased)
        return out, mean, unbiased

    @staticmethod
    @once_differentiable
    def backward(ctx, dy: Tensor, _dmean: Tensor, _dvar: Tensor):
        x, mask, weight, mean, invstd, count = ctx.saved_tensors
        groups, lead, dtype = ctx.groups, tuple(range(x.dim() - 1)), mean.dtype
        grad = torch.sub(x, mean).mul_(dy)
        dy_x = per_entry(grad, groups, dtype)  # sums of dy (x - mean)
        grad_weight = dy_x.sum(lead) * invstd
        dy_x = valid_sum(dy_x, mask, grad)
        dy_sum = per_entry(dy, groups, dtype)
        grad_bias = dy_sum.sum(lead, dtype=dtype)
        dy_sum = valid_sum(dy_sum, mask, grad)
        # Valid rows: scale (dy - sum_v dy / n - xhat sum_v dy xhat / n) = scale dy + step + slope x.
        scale = weight * invstd
        n = count.clamp_min(1)
        slope = -scale * invstd.square() * dy_x / n
        step = -scale * dy_sum / n - slope * mean
        if groups:
            zero = step.new_zeros(())
            torch.addcmul(torch.where(mask, step, zero), dy, scale, out=grad)
            grad.addcmul_(x, torch.where(mask, slope, zero))
        else:
            torch.addcmul(step, x, slope, out=grad).mul_(mask).addcmul_(dy, scale)
        return grad.to(x.dtype), None, grad_weight.to(weight.dtype), grad_bias.to(weight.dtype), None


def masked_batch_norm(x: Tensor, valid: Tensor, weight: Tensor, bias: Tensor, eps: float) -> tuple[Tensor, ...]:
    """Train-mode batch norm of x (..., F) over the rows `valid` marks, and the batch mean and unbiased
    variance for the running estimates.

    All rows are normalised with the valid rows' statistics; invalid rows do not enter them and may hold
    anything, non-finite values included. The backward is batch norm's with the statistics' terms summed
    over valid rows, so invalid rows' outputs pass no gradient to valid rows: it is the exact gradient
    whenever those outputs get none (the point networks fill padded rows in after the last layer).
    Invalid rows' own gradient is dy * scale (non-finite where their input is).
    """
    return MaskedBatchNormFunction.apply(x, valid, weight, bias, eps)


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
        if not self.training:
            scale = self.weight * torch.rsqrt(self.running_var + self.eps)
            return torch.addcmul(self.bias - self.running_mean * scale, x, scale).to(x.dtype)
        out, mean, unbiased = masked_batch_norm(x, valid, self.weight, self.bias, self.eps)
        self.track(mean, unbiased)
        return out

    @torch.no_grad()
    def track(self, mean: Tensor, unbiased: Tensor) -> None:
        """Fold a training batch's mean and unbiased variance into the running estimates."""
        self.running_mean.mul_(1 - self.momentum).add_(self.momentum * mean)
        self.running_var.mul_(1 - self.momentum).add_(self.momentum * unbiased)
        self.num_batches_tracked.add_(1)


class PointLayer(nn.Module):
    """One per-point layer: linear -> masked batch norm -> activation on (..., C_in) features."""

    def __init__(self, in_dim: int, out_dim: int, bias: bool, activation: nn.Module) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim, bias=bias)
        self.norm = MaskedBatchNorm(out_dim)
        self.activation = activation

    def forward(self, x: Tensor, valid: Tensor) -> Tensor:
        return self.activation(self.norm(self.linear(x), valid))
