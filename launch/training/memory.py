"""A lower bound on one micro-batch's activation memory, checked against free memory before anything is allocated.

The estimate counts only what the student backbone keeps for its backward pass. For the ViT, per token row
and block:
the block input, its two norms, q, k, v, the attention output and projection, and the MLP's hidden layer
before and after its activation, (8 + 2 mlp_ratio) x dim values, at 2 bytes under bf16/fp16 autocast and 4
in fp32. With `encoder.checkpoint_blocks` a block keeps only its input, plus one block's values while it
is recomputed. The rows are those the student encodes, counted as `model.flops` counts them: masked views
see only their visible patches, and drop path skips rows. The tokenizer, predictor, heads, attention
matrices, teacher, weights and optimizer state are left out, so real use is well above the estimate: a
micro-batch it refuses cannot fit, one it passes may still not. For a point network, each layer's output
before and after its batch norm at every point (at every edge, k per point, for DGCNN's EdgeConv layers).
`train.memory_check: false` skips the check.
"""

from __future__ import annotations

import psutil
import torch

from configuration import ConfigError
from launch.training.config import PretrainConfig
from model.config import ModelConfig
from model.encoder import drop_path_rates
from model.masking import mask_counts

GIB = 2**30


def encoder_sequences(cfg: ModelConfig) -> list[tuple[int, int]]:
    """(sequences, tokens per sequence) the student encoder runs per sample."""
    cg, p, cls = cfg.num_global_crops, cfg.patchify.global_patches, int(cfg.encoder.cls_token)
    if cfg.method == "dwc" or cfg.mode == "cls":
        sequences = [(cg, cls + p)]
    else:
        sequences = [(cg * cfg.masking.num_masks, cls + mask_counts(p, cfg.masking).num_visible)]
        if cfg.mode == "cls_mask":
            sequences.append((1, cls + p))  # global crop 0, unmasked
    if cfg.uses_cls and cfg.num_local_crops:
        sequences.append((cfg.num_local_crops, 1 + cfg.patchify.local_patches))
    return sequences


def point_values(cfg: ModelConfig, crop_points: tuple[int, int]) -> int:
    """Values a point network keeps per sample, over its global and local crops of `crop_points` points."""
    points = cfg.num_global_crops * crop_points[0] + cfg.num_local_crops * crop_points[1]
    if cfg.backbone == "pointnet":
        return points * 2 * sum(cfg.pointnet.widths)
    d = cfg.dgcnn
    return points * 2 * (d.k * sum(d.edge_widths) + d.global_dim)


def activation_bytes(cfg: ModelConfig, precision: str, crop_points: tuple[int, int] = (0, 0)) -> int:
    """The lower bound, in bytes, of one sample's student activations (see the module's docstring);
    `crop_points` (global, local crop size) sizes a point network's."""
    size = 2 if precision in ("bf16", "fp16") else 4
    if cfg.backbone != "vit":
        return point_values(cfg, crop_points) * size
    enc = cfg.encoder
    rows = sum(s * t for s, t in encoder_sequences(cfg))
    kept = [rows * (1.0 - p if p >= 0.1 else 1.0) for p in drop_path_rates(enc)]  # as model.flops
    per_row = (8 + 2 * enc.mlp_ratio) * enc.dim
    values = sum(kept) * enc.dim + max(kept) * per_row if enc.checkpoint_blocks else sum(kept) * per_row
    return int(values * size)


def free_bytes(device: torch.device, ranks_on_node: int) -> int:
    """Memory one rank can use: the GPU's free memory, or the host's available memory shared by its ranks."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return psutil.virtual_memory().available // ranks_on_node


def check_micro_batch(cfg: PretrainConfig, micro_batch: int, precision: str, free: int) -> None:
    """A `ConfigError` when `micro_batch` samples need more than `free` bytes by the lower bound."""
    local = cfg.data.local_crops
    crop_points = (cfg.data.global_crops.points, 0 if local is None else local.points)
    need = micro_batch * activation_bytes(cfg.model, precision, crop_points)
    if cfg.train.memory_check and need > free:
        raise ConfigError(
            f"train.micro_batch: {micro_batch} samples per rank and micro-step need at least {need / GIB:.1f} GiB "
            f"of activations ({precision}, a lower bound: launch/training/memory.py), but {free / GIB:.1f} GiB is "
            f"free; lower train.global_batch or train.micro_batch, or set train.memory_check=false")
