"""Transformer building blocks shared by the encoder and the predictor.

All linears inside attention and FFN are bias-free. Attention goes through
`F.scaled_dot_product_attention`, so PyTorch picks the flash / memory-efficient kernel on GPUs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class RMSNorm(nn.Module):
    """RMSNorm with a learnable scale and no bias; statistics always in fp32.

    The official RMSNorm squares in the input dtype; under CUDA autocast `pow` is computed in fp32,
    so its statistics are fp32 there too. Up-casting here makes that explicit and independent of the
    autocast backend (CPU autocast, or a half-precision input outside autocast, would square in
    fp16 and overflow once |x| > ~256). The input dtype is returned so the matmuls around it stay in
    low precision.
    """

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        y = F.rms_norm(x.float(), (x.shape[-1],), self.weight.float(), self.eps)
        return y.to(x.dtype)


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim, bias=False)
        self.fc2 = nn.Linear(hidden_dim, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


def _split_heads(x: Tensor, num_heads: int) -> Tensor:
    b, n, d = x.shape
    return x.view(b, n, num_heads, d // num_heads).transpose(1, 2)


def _merge_heads(x: Tensor) -> Tensor:
    b, h, n, hd = x.shape
    return x.transpose(1, 2).reshape(b, n, h * hd)


def attention_probs(q: Tensor, k: Tensor) -> Tensor:
    """Explicit softmax(q k^T / sqrt(d)) in fp32, for visualisation (same maths as SDPA)."""
    scale = q.shape[-1] ** -0.5
    return torch.softmax((q.float() @ k.float().transpose(-2, -1)) * scale, dim=-1)


class SelfAttention(nn.Module):
    """Multi-head self-attention with a packed, bias-free qkv projection (as nn.MultiheadAttention)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=False)

    def _qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        b, n, d = x.shape
        qkv = self.qkv(x).view(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        return qkv.unbind(0)

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = self._qkv(x)
        return self.proj(_merge_heads(F.scaled_dot_product_attention(q, k, v)))

    def attention(self, x: Tensor) -> Tensor:
        """Attention probabilities (B, heads, N, N) for the same input as `forward`."""
        q, k, _ = self._qkv(x)
        return attention_probs(q, k)


class CrossAttention(nn.Module):
    """Queries attend to a memory only: there is no query-query attention by construction.

    The q/k/v projections are packed in one (3D x D) bias-free weight, as in nn.MultiheadAttention,
    and the memory is projected with its last two thirds.
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.dim = dim
        self.in_proj = nn.Parameter(torch.empty(3 * dim, dim))
        self.proj = nn.Linear(dim, dim, bias=False)
        nn.init.xavier_uniform_(self.in_proj)

    def forward(self, queries: Tensor, memory: Tensor) -> Tensor:
        q = F.linear(queries, self.in_proj[: self.dim])
        k, v = F.linear(memory, self.in_proj[self.dim :]).chunk(2, dim=-1)
        q, k, v = (_split_heads(t, self.num_heads) for t in (q, k, v))
        return self.proj(_merge_heads(F.scaled_dot_product_attention(q, k, v)))


def residual_drop_path(x: Tensor, branch: Callable[[Tensor], Tensor], p: float, training: bool) -> Tensor:
    """x + DropPath(branch(x)).

    For p >= 0.1 this is the reference's "efficient" drop path: exactly round((1 - p) * B) random
    sequences go through the branch, the others skip it entirely, so the branch costs (1 - p) of a
    full pass. Below 0.1 (too few rows saved to pay for the gather) a per-sample Bernoulli mask is
    used. Both scale kept branches by 1 / (1 - p), as the reference does.
    """
    if not training or p == 0.0:
        return x + branch(x)
    batch = x.shape[0]
    if p >= 0.1:
        keep = max(1, round((1.0 - p) * batch))
        rows = torch.randperm(batch, device=x.device)[:keep]
        out = branch(x.index_select(0, rows))
        return x.index_add(0, rows, out.to(x.dtype), alpha=1.0 / (1.0 - p))
    keep_mask = x.new_empty((batch,) + (1,) * (x.dim() - 1)).bernoulli_(1.0 - p)
    return x + branch(x) * keep_mask / (1.0 - p)


class Block(nn.Module):
    """Pre-norm transformer block: x += MHSA(norm(x)); x += FFN(norm(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, drop_path: float, eps: float) -> None:
        super().__init__()
        self.norm1 = RMSNorm(dim, eps)
        self.attn = SelfAttention(dim, num_heads)
        self.norm2 = RMSNorm(dim, eps)
        self.mlp = FeedForward(dim, int(dim * mlp_ratio))
        self.drop_path = drop_path

    def forward(self, x: Tensor) -> Tensor:
        x = residual_drop_path(x, lambda t: self.attn(self.norm1(t)), self.drop_path, self.training)
        return residual_drop_path(x, lambda t: self.mlp(self.norm2(t)), self.drop_path, self.training)


class CrossBlock(nn.Module):
    """Predictor block: q += CrossAttn(norm(q), memory); q += FFN(norm(q)). The memory is not normalised."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, eps: float) -> None:
        super().__init__()
        self.norm1 = RMSNorm(dim, eps)
        self.attn = CrossAttention(dim, num_heads)
        self.norm2 = RMSNorm(dim, eps)
        self.mlp = FeedForward(dim, int(dim * mlp_ratio))

    def forward(self, q: Tensor, memory: Tensor) -> Tensor:
        q = q + self.attn(self.norm1(q), memory)
        return q + self.mlp(self.norm2(q))
