"""An independent forward pass of a point encoder stored in the authors' key layout.

Written from the reference's module structure (`asymdsd/layers/tokenization.py` MemEfficientPointMaxEmbedding,
`asymdsd/layers/transformer.py` pre-norm blocks over `nn.MultiheadAttention`, RMSNorm computed as
x * rsqrt(mean(x^2) + eps) * w), reading their parameter names directly. If the import renamed a
tensor to the wrong place, packed q/k/v differently from `nn.MultiheadAttention`, or concatenated the
pooled descriptor on the wrong side, our encoder's output would differ from this one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.patchify import Patches

TOK = "patch_embedding.point_embedding."
POS = "patch_embedding.position_embedding.position_embedding."


def _rms(x: Tensor, weight: Tensor, eps: float = 1e-5) -> Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def _point_block(sd: dict[str, Tensor], x: Tensor, block: str) -> Tensor:
    x = F.linear(x, sd[f"{TOK}{block}.0.weight"])
    x = F.gelu(_rms(x, sd[f"{TOK}{block}.1.weight"]))
    return F.linear(x, sd[f"{TOK}{block}.3.weight"], sd.get(f"{TOK}{block}.3.bias"))


@torch.no_grad()
def reference_forward(sd: dict[str, Tensor], patches: Patches, num_heads: int) -> Tensor:
    """(C, 1 + P, D) outputs of the reference point encoder (block tokenizer, CLS token) for `patches`."""
    x = _point_block(sd, patches.neighborhoods, "block_1")
    x = torch.cat([x, x.amax(-2, keepdim=True).expand_as(x)], dim=-1)
    tokens = _point_block(sd, x, "block_2").amax(-2)
    pe = F.linear(F.gelu(F.linear(patches.centers, sd[f"{POS}0.weight"], sd[f"{POS}0.bias"])),
                  sd[f"{POS}2.weight"], sd[f"{POS}2.bias"])
    c, _, d = tokens.shape
    x = torch.cat([sd["cls_token"].expand(c, 1, d), tokens], dim=1)
    pe = torch.cat([torch.zeros(c, 1, d), pe], dim=1)
    depth = len({k.split(".")[2] for k in sd if k.startswith("encoder.stack.")})
    for i in range(depth):
        prefix = f"encoder.stack.{i}."
        attn = nn.MultiheadAttention(d, num_heads, bias=False, batch_first=True)
        attn.in_proj_weight.copy_(sd[prefix + "self_attn.attn.in_proj_weight"])
        attn.out_proj.weight.copy_(sd[prefix + "self_attn.attn.out_proj.weight"])
        attn.eval()
        x = x + pe
        y = _rms(x, sd[prefix + "self_attn.norm.weight"])
        x = x + attn(y, y, y, need_weights=False)[0]
        y = _rms(x, sd[prefix + "ffn.norm.weight"])
        x = x + F.linear(F.gelu(F.linear(y, sd[prefix + "ffn.mlp.linear_1.weight"])), sd[prefix + "ffn.mlp.linear_2.weight"])
    return _rms(x, sd["encoder.norm.weight"])
