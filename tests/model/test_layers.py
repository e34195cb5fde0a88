"""RMSNorm precision, efficient drop path, SDPA attention."""

from __future__ import annotations

import torch

from model.layers import RMSNorm, SelfAttention, attention_probs, residual_drop_path


def reference_rms(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    x = x.double()
    return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def test_rmsnorm_fp16_large_inputs_do_not_overflow():
    """A half-precision input outside CUDA autocast (which would square in fp32) must not overflow."""
    x = (torch.randn(4, 384) * 2000).half()  # x**2 ~ 4e6 > fp16 max 65504
    naive = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5)  # statistics squared in fp16
    assert not torch.isfinite(naive).all() or torch.allclose(naive, torch.zeros_like(naive))
    out = RMSNorm(384)(x)
    assert out.dtype == torch.float16 and torch.isfinite(out).all()
    assert torch.allclose(out.double(), reference_rms(x), atol=2e-3, rtol=2e-3)


def test_rmsnorm_bf16_large_inputs_are_accurate():
    x = (torch.randn(8, 4096) * 1e15).bfloat16()
    out = RMSNorm(4096)(x)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    assert torch.allclose(out.double(), reference_rms(x), atol=2e-2, rtol=1e-2)


def test_rmsnorm_statistics_in_fp32_under_autocast():
    norm = RMSNorm(64)
    x = torch.randn(2, 64) * 300
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = norm(x)
    assert out.dtype == torch.float32  # the residual stream stays fp32
    assert torch.allclose(out.double(), reference_rms(x), atol=1e-5)


def test_efficient_drop_path_runs_the_branch_on_exactly_the_kept_rows():
    x = torch.zeros(10, 3, 4)
    seen = []

    def branch(t: torch.Tensor) -> torch.Tensor:
        seen.append(t.shape[0])
        return torch.ones_like(t)

    out = residual_drop_path(x, branch, p=0.2, training=True)
    assert seen == [8]  # round((1 - 0.2) * 10) rows computed, not 10
    changed = (out != 0).flatten(1).any(1)
    assert changed.sum() == 8
    assert torch.allclose(out[changed], torch.full_like(out[changed], 1 / 0.8))
    assert torch.equal(residual_drop_path(x, branch, p=0.2, training=False), torch.ones_like(x))


def test_small_drop_path_is_per_sample():
    torch.manual_seed(0)
    x = torch.zeros(4000, 2)
    out = residual_drop_path(x, torch.ones_like, p=0.05, training=True)
    rows = out[:, 0]
    kept = rows != 0
    assert torch.allclose(rows[kept], torch.full_like(rows[kept], 1 / 0.95))
    assert abs((rows == 0).float().mean().item() - 0.05) < 0.02


def test_sdpa_attention_equals_explicit_softmax():
    torch.manual_seed(0)
    attn = SelfAttention(32, 4)
    x = torch.randn(3, 7, 32)
    q, k, v = attn._qkv(x)
    explicit = attn.proj((attention_probs(q, k) @ v).transpose(1, 2).reshape(3, 7, 32))
    assert torch.allclose(attn(x), explicit, atol=1e-5)
    assert torch.allclose(attn.attention(x).sum(-1), torch.ones(3, 4, 7))
