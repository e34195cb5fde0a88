"""Point tokenizer and the point-cloud ViT encoder."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from model.backbone import Backbone
from model.config import EncoderConfig, TokenizerConfig
from model.layers import Block, RMSNorm
from model.patchify import Patches, patchify


class PointMLP(nn.Module):
    """Per-point Linear -> RMSNorm -> GELU -> ... -> Linear over the channel dimension."""

    def __init__(self, dims: list[int], bias: bool, eps: float) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(len(dims) - 1):
            layers.append(nn.Linear(dims[i], dims[i + 1], bias=bias))
            if i < len(dims) - 2:
                layers += [RMSNorm(dims[i + 1], eps), nn.GELU()]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor, pooled: Tensor | None = None) -> Tensor:
        """x: (..., K, C). With `pooled` (..., 1, C'), the input is [x, pooled broadcast over K].

        The first linear is split so the pooled half is computed once per patch instead of once per
        point: the same maths as concatenating, with ~half the FLOPs of that layer and no (.., K, 2C)
        temporary.
        """
        first, rest = self.layers[0], self.layers[1:]
        if pooled is None:
            return rest(first(x))
        c = x.shape[-1]
        y = F.linear(x, first.weight[:, :c]) + F.linear(pooled, first.weight[:, c:], first.bias)
        return rest(y)


class PointPatchEmbed(nn.Module):
    """Mini-PointNet with max pooling, applied to each patch of K relative points.

    Stage i maps per-point features through a PointMLP; between stages the max-pooled patch
    descriptor is concatenated to every point ([point, pooled], the reference's order); the last
    stage is max-pooled into the token.
    """

    def __init__(self, cfg: TokenizerConfig, dim: int, eps: float) -> None:
        super().__init__()
        self.num_chunks = cfg.num_chunks
        self.checkpoint = cfg.checkpoint
        stages = []
        in_dim = 3
        for i, widths in enumerate(cfg.hidden_dims):
            dims = [in_dim, *widths] + ([dim] if i == len(cfg.hidden_dims) - 1 else [])
            stages.append(PointMLP(dims, cfg.bias, eps))
            in_dim = 2 * dims[-1]
        self.stages = nn.ModuleList(stages)

    def _embed(self, x: Tensor) -> Tensor:
        pooled = None
        for stage in self.stages:
            x = stage(x, pooled)
            pooled = x.amax(dim=-2, keepdim=True)
        return pooled.squeeze(-2)

    def forward(self, neighborhoods: Tensor) -> Tensor:
        """(C, P, K, 3) -> (C, P, D)."""
        c, p, k, _ = neighborhoods.shape
        x = neighborhoods.reshape(c * p, k, 3)
        outs = []
        for chunk in x.chunk(self.num_chunks, dim=0):
            if self.checkpoint and torch.is_grad_enabled():
                outs.append(checkpoint(self._embed, chunk, use_reentrant=False))
            else:
                outs.append(self._embed(chunk))
        return torch.cat(outs, dim=0).view(c, p, -1)


class PositionEmbedding(nn.Module):
    """MLP on absolute centre coordinates: Linear(3, h) -> GELU -> Linear(h, D), with biases."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(3, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, centers: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(centers)))


def drop_path_rates(cfg: EncoderConfig) -> list[float]:
    if cfg.drop_path_schedule == "uniform":
        return [cfg.drop_path] * cfg.depth
    return torch.linspace(0.0, cfg.drop_path, cfg.depth).tolist()


class PointEncoder(Backbone):
    """The point-cloud ViT: tokenizer + optional CLS token + pre-norm RMSNorm transformer + final norm.

    Tokens and positional embeddings are kept apart: the positional embedding is added to the
    residual stream before *every* block, and the CLS slot's positional embedding is zero. Its global
    embedding is the CLS token (the patch mean without one).
    """

    has_patch_tokens = True

    def __init__(self, tokenizer: TokenizerConfig, cfg: EncoderConfig) -> None:
        super().__init__()
        self.dim = cfg.dim
        self.embedding_pooling = ("cls",) if cfg.cls_token else ("mean",)
        self.checkpoint_blocks = cfg.checkpoint_blocks
        self.patch_embed = PointPatchEmbed(tokenizer, cfg.dim, cfg.norm_eps)
        self.pos_embed = PositionEmbedding(cfg.dim, tokenizer.pos_hidden_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.dim)) if cfg.cls_token else None
        self.blocks = nn.ModuleList(
            Block(cfg.dim, cfg.num_heads, cfg.mlp_ratio, p, cfg.norm_eps) for p in drop_path_rates(cfg)
        )
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)

    @property
    def has_cls(self) -> bool:
        return self.cls_token is not None

    @property
    def feature_pooling(self) -> tuple[str, ...]:
        """CLS + patch mean, the reference's frozen features; mean + max without a CLS token."""
        return ("cls", "mean") if self.has_cls else ("mean", "max")

    def prepare(self, points: Tensor, num_points: Tensor, num_patches: int, patch_size: int,
                center_idx: Tensor | None = None, patch_idx: Tensor | None = None,
                generator: torch.Generator | None = None) -> Patches:
        """Normalised crops cut into patches (`model.patchify.patchify`)."""
        return patchify(points, num_points, num_patches, patch_size, center_idx, patch_idx, generator)

    def embed(self, patches: Patches) -> tuple[Tensor, Tensor]:
        """Patch tokens and positional embeddings, each (C, P, D)."""
        return self.patch_embed(patches.neighborhoods), self.pos_embed(patches.centers)

    def _with_cls(self, tokens: Tensor, pe: Tensor) -> tuple[Tensor, Tensor]:
        if self.cls_token is None:
            return tokens, pe
        c = tokens.shape[0]
        cls = self.cls_token.expand(c, -1, -1).to(tokens.dtype)
        return torch.cat([cls, tokens], dim=1), torch.cat([torch.zeros_like(pe[:, :1]), pe], dim=1)

    def forward_tokens(self, tokens: Tensor, pe: Tensor) -> Tensor:
        """Run the transformer on (C, T, D) tokens; returns (C, [1 +] T, D) after the final norm."""
        return self._run(tokens, pe, ())[0]

    def _run(self, tokens: Tensor, pe: Tensor, keep: Sequence[int]) -> tuple[Tensor, list[Tensor]]:
        x, pe = self._with_cls(tokens, pe)
        use_ckpt = self.checkpoint_blocks and self.training and torch.is_grad_enabled()
        kept = {}
        for i, blk in enumerate(self.blocks, start=1):
            x = x + pe
            x = checkpoint(blk, x, use_reentrant=False) if use_ckpt else blk(x)
            if i in keep:
                kept[i] = x
        return self.norm(x), [kept[i] for i in keep]

    def forward(self, patches: Patches) -> Tensor:
        return self.forward_tokens(*self.embed(patches))

    def forward_with_blocks(self, patches: Patches, blocks: Sequence[int]) -> tuple[Tensor, list[Tensor]]:
        """The final output and the raw outputs (C, [1 +] P, D) of the given blocks (1-based, before the
        final norm), as the official segmentation model reads its encoder's hidden states."""
        depth = len(self.blocks)
        if not all(1 <= b <= depth for b in blocks):
            raise ValueError(f"blocks {list(blocks)} must lie in 1..{depth} (this encoder's depth)")
        return self._run(*self.embed(patches), blocks)

    @torch.no_grad()
    def cls_attention(self, patches: Patches, blocks: list[int] | None = None) -> dict[int, Tensor]:
        """CLS-to-patch attention (C, heads, P) of the requested blocks (default: the last).

        Negative indices count from the end. The forward pass is the ordinary one; the attention
        probabilities of the requested blocks are recomputed explicitly from the same inputs.
        """
        if self.cls_token is None:
            raise ValueError("this encoder has no CLS token (mode 'mask'), so there is no CLS attention")
        depth = len(self.blocks)
        wanted = {b % depth for b in (blocks if blocks is not None else [-1])}
        x, pe = self._with_cls(*self.embed(patches))
        maps: dict[int, Tensor] = {}
        for i, blk in enumerate(self.blocks):
            x = x + pe
            if i in wanted:
                maps[i] = blk.attn.attention(blk.norm1(x))[:, :, 0, 1:]
            x = blk(x)
        return maps
