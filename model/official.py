"""Import the authors' published AsymDSD checkpoints (`AsymDSD-S_ShapeNet.ckpt`, ...) into our encoder.

The published files are PyTorch Lightning checkpoints of the whole pretraining module; `state_dict`
holds `student.*` and `teacher.*` point encoders, named as in the official AsymDSD code
(`asymdsd/models/point_encoder.py`, `asymdsd/layers/`). The tensors are ours up to naming (RMSNorm
scales, bias-free packed qkv, the tokenizer's [point, pooled] concatenation), so the import is a
renaming checked by shape; the older block names `attn_module` / `ffn_module` are read too.

Loading never runs code from the file: `torch.load(weights_only=True)` rebuilds tensors and plain
containers, and the globals Lightning pickles with the hyper-parameters (the authors' config classes,
enums, paths) are listed without executing the file and replaced by inert stand-ins.

The architecture is read from the weight shapes; the head count, which no shape fixes, is width / 64
as in every published model unless a model config is given. `official_state_dict` writes our weights
in their layout.
"""

from __future__ import annotations

import hashlib
import pickle
import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from model.config import EncoderConfig, ModelConfig, TokenizerConfig
from model.encoder import PointEncoder
from model.backbones import build_backbone

BRANCHES = ("teacher", "student")
HEAD_DIM = 64
LEGACY_NAMES = {".attn_module.": ".self_attn.", ".ffn_module.": ".ffn."}
POINT_EMBED = "patch_embedding.point_embedding."
POS_EMBED = "patch_embedding.position_embedding.position_embedding."
_BLOCK_PARTS = {  # ours (under blocks.<i>.) -> theirs (under encoder.stack.<i>.)
    "norm1.weight": "self_attn.norm.weight",
    "attn.qkv.weight": "self_attn.attn.in_proj_weight",
    "attn.proj.weight": "self_attn.attn.out_proj.weight",
    "norm2.weight": "ffn.norm.weight",
    "mlp.fc1.weight": "ffn.mlp.linear_1.weight",
    "mlp.fc2.weight": "ffn.mlp.linear_2.weight",
}


class OfficialCheckpointError(ValueError):
    """An official checkpoint that cannot be imported; the message names the file and the key."""


class ForeignObject:
    """Inert stand-in for a class or function named by a checkpoint: records arguments, runs nothing."""

    def __new__(cls, *args: Any, **kwargs: Any) -> ForeignObject:
        obj = object.__new__(cls)
        obj.args = args
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        self.state = state


def file_sha256(path: str | Path) -> str:
    """The hex SHA-256 of a file, read in 4 MiB blocks (checkpoints are hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _stand_ins(names: list[str]) -> list[tuple[type, str]]:
    return [(type(name, (ForeignObject,), {}), name) for name in names]


def load_weights_only(path: str | Path) -> dict[str, Any]:
    """The checkpoint's top-level dict, loaded with `weights_only=True` and foreign globals made inert."""
    path = str(path)
    if not Path(path).is_file():
        raise OfficialCheckpointError(f"official checkpoint not found: {path}")
    try:
        foreign = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception as err:
        raise OfficialCheckpointError(f"{path}: not a PyTorch zip checkpoint ({type(err).__name__}: {err})") from None
    try:
        with torch.serialization.safe_globals(_stand_ins(foreign)):
            doc = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as err:
        raise OfficialCheckpointError(
            f"{path}: refused, it cannot be loaded with torch.load(weights_only=True): {err}") from None
    if not isinstance(doc, dict):
        raise OfficialCheckpointError(f"{path}: expected a dict at the top level, got {type(doc).__name__}")
    return doc


# -- key layout --------------------------------------------------------------------------------------


def _tokenizer_layout(cfg: TokenizerConfig) -> str:
    """'block' (the S MemEfficientPointMaxEmbedding: two stages of two linears, bias-free) or 'var'."""
    two_by_two = len(cfg.hidden_dims) == 2 and len(cfg.hidden_dims[0]) == 2 and len(cfg.hidden_dims[1]) == 1
    return "block" if two_by_two and not cfg.bias else "var"


def _tokenizer_key(ours: str, layout: str) -> str:
    """`patch_embed.stages.<s>.layers.<j>.<p>` -> their name (linear i sits at j = 3i, its norm at 3i + 1)."""
    m = re.fullmatch(r"patch_embed\.stages\.(\d+)\.layers\.(\d+)\.(weight|bias)", ours)
    if m is None:
        raise KeyError(ours)
    stage, j, param = int(m[1]), int(m[2]), m[3]
    if layout == "block":
        return f"{POINT_EMBED}block_{stage + 1}.{j}.{param}"
    return f"{POINT_EMBED}blocks.{stage}.mlp.{4 * (j // 3) + j % 3}.{param}"


def official_key(ours: str, layout: str) -> str:
    """Their name for one of our `PointEncoder` state-dict keys."""
    if ours == "cls_token":
        return ours
    if ours == "norm.weight":
        return "encoder.norm.weight"
    if ours.startswith("pos_embed.fc"):
        layer, param = ours[len("pos_embed.fc"):].split(".")
        return f"{POS_EMBED}{0 if layer == '1' else 2}.{param}"
    if ours.startswith("patch_embed."):
        return _tokenizer_key(ours, layout)
    m = re.fullmatch(r"blocks\.(\d+)\.(.+)", ours)
    if m is None or m[2] not in _BLOCK_PARTS:
        raise KeyError(f"no official name for {ours}")
    return f"encoder.stack.{m[1]}.{_BLOCK_PARTS[m[2]]}"


def official_state_dict(encoder: PointEncoder, cfg: ModelConfig) -> dict[str, Tensor]:
    """Our encoder's weights under their `point_encoder` names (no branch prefix)."""
    layout = _tokenizer_layout(cfg.tokenizer)
    return {official_key(k, layout): v.detach().clone() for k, v in encoder.state_dict().items()}


# -- import ------------------------------------------------------------------------------------------


def _select_branch(state: dict[str, Any], branch: str, path: str) -> dict[str, Tensor]:
    for prefix in (f"{branch}.point_encoder.", "point_encoder."):
        picked = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if picked:
            break
    else:
        tops = sorted({k.split(".")[0] for k in state})
        raise OfficialCheckpointError(f"{path}: no '{branch}.point_encoder.*' weights in state_dict "
                                      f"(top-level names: {', '.join(tops[:12])})")
    out = {}
    for key, value in picked.items():
        for old, new in LEGACY_NAMES.items():
            key = key.replace(old, new)
        if not isinstance(value, Tensor):
            raise OfficialCheckpointError(f"{path}: {prefix}{key} is a {type(value).__name__}, not a tensor")
        out[key] = value
    return out


def _shape(theirs: dict[str, Tensor], key: str, path: str) -> torch.Size:
    if key not in theirs:
        raise OfficialCheckpointError(f"{path}: missing {key}; this is not an AsymDSD point encoder")
    return theirs[key].shape


def _infer_tokenizer(theirs: dict[str, Tensor], path: str) -> TokenizerConfig:
    pos_hidden = _shape(theirs, f"{POS_EMBED}0.weight", path)[0]
    if f"{POINT_EMBED}block_1.0.weight" in theirs:
        h0 = _shape(theirs, f"{POINT_EMBED}block_1.0.weight", path)[0]
        h1 = _shape(theirs, f"{POINT_EMBED}block_1.3.weight", path)[0]
        h2 = _shape(theirs, f"{POINT_EMBED}block_2.0.weight", path)[0]
        bias = f"{POINT_EMBED}block_1.3.bias" in theirs
        return TokenizerConfig(hidden_dims=[[h0, h1], [h2]], bias=bias, pos_hidden_dim=pos_hidden)
    stages: dict[int, list[tuple[int, int]]] = {}
    for key, value in theirs.items():
        m = re.fullmatch(re.escape(POINT_EMBED) + r"blocks\.(\d+)\.mlp\.(\d+)\.weight", key)
        if m and int(m[2]) % 4 == 0:
            stages.setdefault(int(m[1]), []).append((int(m[2]), value.shape[0]))
    if not stages:
        raise OfficialCheckpointError(f"{path}: no tokenizer weights ({POINT_EMBED}block_1.* or blocks.*)")
    widths = [[w for _, w in sorted(stages[s])] for s in sorted(stages)]
    widths[-1] = widths[-1][:-1]  # the last linear ends at the encoder width, which the config adds itself
    bias = f"{POINT_EMBED}blocks.0.mlp.0.bias" in theirs
    return TokenizerConfig(hidden_dims=widths, bias=bias, pos_hidden_dim=pos_hidden)


def infer_model_config(theirs: dict[str, Tensor], name: str, path: str = "<state_dict>") -> ModelConfig:
    """Our model config for a reference point encoder, from its weight shapes."""
    dim = _shape(theirs, "encoder.norm.weight", path)[0]
    depth = len({int(m[1]) for k in theirs if (m := re.match(r"encoder\.stack\.(\d+)\.", k))})
    if depth == 0:
        raise OfficialCheckpointError(f"{path}: no transformer blocks (encoder.stack.*)")
    hidden = _shape(theirs, "encoder.stack.0.ffn.mlp.linear_1.weight", path)[0]
    has_cls = "cls_token" in theirs
    encoder = EncoderConfig(dim=dim, depth=depth, num_heads=max(1, dim // HEAD_DIM), mlp_ratio=hidden / dim,
                            cls_token=has_cls)
    return ModelConfig(name=name, mode="cls_mask" if has_cls else "mask", tokenizer=_infer_tokenizer(theirs, path),
                       encoder=encoder)


def _our_state(theirs: dict[str, Tensor], encoder: PointEncoder, cfg: ModelConfig, path: str) -> dict[str, Tensor]:
    """Their tensors under our names; a tokenizer bias they do not have (their S layout keeps the first
    linear of each stage bias-free even with bias on) is zero, which is the same function."""
    layout = "block" if f"{POINT_EMBED}block_1.0.weight" in theirs else "var"
    state, used = {}, set()
    for ours, target in encoder.state_dict().items():
        key = official_key(ours, layout)
        if key not in theirs:
            if ours.startswith("patch_embed.") and ours.endswith(".bias") and layout == "block":
                state[ours] = torch.zeros_like(target)
                continue
            raise OfficialCheckpointError(f"{path}: missing {key} (our {ours})")
        if theirs[key].shape != target.shape:
            raise OfficialCheckpointError(f"{path}: {key} has shape {tuple(theirs[key].shape)}, "
                                          f"the model config needs {tuple(target.shape)}")
        state[ours] = theirs[key].float()
        used.add(key)
    extra = sorted(set(theirs) - used)
    if extra:
        raise OfficialCheckpointError(
            f"{path}: weights this encoder cannot represent (LayerNorm or attention biases?): {', '.join(extra[:8])}")
    return state


def load_official_encoder(path: str | Path, branch: str = "teacher", model_cfg: ModelConfig | None = None,
                          device: str | torch.device = "cpu") -> tuple[PointEncoder, ModelConfig, dict[str, Any]]:
    """(encoder in eval mode, its model config, provenance) from a published Lightning checkpoint."""
    if branch not in BRANCHES:
        raise ValueError(f"branch must be one of {BRANCHES}, got {branch!r}")
    path = str(path)
    doc = load_weights_only(path)
    state = doc.get("state_dict", doc)
    if not isinstance(state, dict):
        raise OfficialCheckpointError(f"{path}: 'state_dict' is a {type(state).__name__}, not a dict")
    theirs = _select_branch(state, branch, path)
    cfg = model_cfg or infer_model_config(theirs, f"official:{Path(path).stem}", path)
    encoder = build_backbone(cfg)
    encoder.load_state_dict(_our_state(theirs, encoder, cfg, path))
    meta = {"source": "official_checkpoint", "path": str(Path(path).resolve()), "branch": branch,
            "sha256": file_sha256(path)}
    meta.update({k: doc[k] for k in ("epoch", "global_step", "pytorch-lightning_version")
                 if isinstance(doc.get(k), (int, str))})
    return encoder.to(device).eval(), cfg, meta

