"""The part-segmentation protocol: fine-tune encoder + segmenter (`PartSegmenter`, or `PointPartSegmenter` for a
point network) on per-point part labels, score mIoU.

The recipe is the official AsymDSD code's for ShapeNetPart (remcofl/AsymDSD, `configs/semseg/*.yaml`,
`configs/data/ShapeNetPart-S.yaml`): 2,048 uniformly subsampled points in 128 patches of 32, batch 16,
300 epochs of AdamW (weight decay 0.05) with the learning rate warmed up over 10 epochs from 1e-7 to
2e-4 then cosine to 1e-7, the whole encoder fine-tuned with drop path 0.2 rising over depth, a random
anisotropic scale in [0.8, 1.25] while training, and plain cross-entropy (the class's default of 0.1
label smoothing is set to 0 in the official config). Test clouds are subsampled the same way without
augmentation; predictions are restricted to the shape's category's parts and scored as instance and
class mIoU (`part_metrics`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from pydantic import Field
from torch import nn
from tqdm import tqdm

from configuration import StrictModel
from launch.evaluation.features import Augmentation
from launch.evaluation.part_data import PartSet
from launch.evaluation.part_metrics import PartScores, part_scores, restrict_to_category
from launch.evaluation.segmentation import PartSegmenter, PointPartSegmenter
from launch.evaluation.train import Phase, autocast, downstream_encoder, epoch_order
from model.config import ModelConfig
from model.backbone import Backbone
from model.features import InputSpec, subsample_indices

PARTSEG_SCHEDULE = Phase(epochs=300, frozen_encoder=False, start_lr=1e-7, peak_lr=2e-4, end_lr=1e-7,
                         warmup_epochs=10)


class PartSegConfig(StrictModel):
    """The part-segmentation recipe (defaults: the official ShapeNetPart one, see the module docstring)."""

    phase: Phase = PARTSEG_SCHEDULE
    input: InputSpec = InputSpec(num_points=2048, subsample="random", num_patches=128, patch_size=32)
    train_aug: Augmentation = Augmentation(scale=(0.8, 1.25))
    blocks: tuple[int, ...] | None = Field(None, description="encoder blocks (1-based) feeding the head; "
                                                               "default a third, two thirds and all of the depth")
    upsampling_dim: int = Field(384, ge=1)
    label_embed_dim: int = Field(64, ge=1)
    head_dims: tuple[int, int] = (512, 256)
    dropout: float = Field(0.5, ge=0, lt=1)
    batch_size: int = Field(16, ge=2)
    weight_decay: float = Field(0.05, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    drop_path: float = Field(0.2, ge=0, lt=1, description="fine-tuned encoder, linear over depth")
    eval_every: int = Field(0, ge=0, description="also test every N epochs (0: only after the last)")
    bf16: bool = Field(True, description="bf16 autocast on CUDA (the reference trains in fp16)")

    def with_epochs(self, epochs: int) -> PartSegConfig:
        """The same recipe over `epochs`, the warm-up scaled alike."""
        factor = epochs / self.phase.epochs
        phase = self.phase.model_copy(update={"epochs": epochs, "warmup_epochs": self.phase.warmup_epochs * factor})
        return self.model_copy(update={"phase": phase})


@dataclass
class PartPredictions:
    """The test clouds as the model saw them (subsampled), their true and predicted parts, and the scores."""

    scores: PartScores
    points: np.ndarray  # (S, n, 3) float32, zero-padded
    num_points: np.ndarray  # (S,)
    truth: np.ndarray  # (S, n) int64, -1 on padding
    pred: np.ndarray  # (S, n) int64, -1 on padding


@dataclass
class PartRunResult:
    """One seed of the part-segmentation protocol."""

    seed: int
    final: PartPredictions
    history: list[dict] = field(default_factory=list)  # per epoch {"epoch", "loss"[, "instance_miou", ...]}


def part_batches(data: PartSet, batch_size: int, device: torch.device, order: np.ndarray | None = None):
    """(points, num_points, parts, categories) tensors on `device`, `batch_size` clouds at a time."""
    order = np.arange(len(data)) if order is None else order
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        yield tuple(torch.from_numpy(a[idx]).to(device) for a in (data.points, data.num_points, data.parts, data.labels))


def subsample_parts(points, num_points, parts, spec: InputSpec, generator):
    """The model's input points (`model.features.subsample_indices`) and their part labels (-1 on padding)."""
    chosen = subsample_indices(points, num_points, spec, generator)
    if chosen is None:
        return points, num_points, parts
    idx, kept = chosen
    valid = torch.arange(idx.shape[1], device=idx.device) < kept[:, None]
    points = points.gather(1, idx[..., None].expand(-1, -1, 3)) * valid[..., None]
    return points, kept, parts.gather(1, idx).masked_fill(~valid, -1)


def build_segmenter(encoder: Backbone, model_cfg: ModelConfig, data: PartSet, cfg: PartSegConfig
                    ) -> PartSegmenter | PointPartSegmenter:
    """The reference's segmenter on the ViT's blocks, or the per-point head on a point network's tokens."""
    encoder = downstream_encoder(encoder, model_cfg, cfg.drop_path)
    if not encoder.has_patch_tokens:
        return PointPartSegmenter(encoder, len(data.class_names), len(data.part_names), cfg.label_embed_dim,
                                  cfg.head_dims, cfg.dropout)
    return PartSegmenter(encoder, len(data.class_names), len(data.part_names), cfg.input, cfg.blocks,
                         cfg.upsampling_dim, cfg.label_embed_dim, cfg.head_dims, cfg.dropout)


@torch.no_grad()
def predict_parts(model: PartSegmenter | PointPartSegmenter, data: PartSet, cfg: PartSegConfig, device: torch.device,
                  seed: int) -> PartPredictions:
    """Subsample every test cloud (seeded), predict each point's part among its category's, and score."""
    model.eval()
    generator = torch.Generator(device=device).manual_seed(seed)
    out: dict[str, list[np.ndarray]] = {"points": [], "num_points": [], "truth": [], "pred": []}
    for points, counts, parts, categories in part_batches(data, cfg.batch_size, device):
        points, counts, parts = subsample_parts(points, counts, parts, cfg.input, generator)
        with autocast(device, cfg.bf16):
            logits = model(points, counts, categories, generator).float()
        pred = restrict_to_category(logits, categories, data.category_parts).masked_fill(parts < 0, -1)
        for key, value in (("points", points), ("num_points", counts), ("truth", parts), ("pred", pred)):
            out[key].append(value.cpu().numpy())
    arrays = {k: np.concatenate([_pad_to(a, max(x.shape[1] for x in v), -1 if k in ("truth", "pred") else 0)
                                 for a in v]) for k, v in out.items() if k != "num_points"}
    counts = np.concatenate(out["num_points"])
    scores = part_scores(arrays["pred"], arrays["truth"], counts, data.labels, data.category_parts, data.class_names)
    return PartPredictions(scores, arrays["points"].astype(np.float32), counts, arrays["truth"], arrays["pred"])


def _pad_to(a: np.ndarray, width: int, fill: int) -> np.ndarray:
    pad = [(0, 0), (0, width - a.shape[1])] + [(0, 0)] * (a.ndim - 2)
    return np.pad(a, pad, constant_values=fill)


def train_segmenter(encoder: Backbone, model_cfg: ModelConfig, train: PartSet, test: PartSet,
                    cfg: PartSegConfig, device: torch.device | str, seed: int) -> PartRunResult:
    """Fine-tune a copy of `encoder` with the segmentation head on `train`; score on `test`."""
    device = torch.device(device)
    torch.manual_seed(seed)  # head initialisation and dropout
    rng = np.random.default_rng(seed)
    generator = torch.Generator(device=device).manual_seed(seed)
    model = build_segmenter(encoder, model_cfg, train, cfg).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.0, betas=cfg.betas, weight_decay=cfg.weight_decay)
    loss_fn = nn.CrossEntropyLoss(ignore_index=-1, label_smoothing=cfg.label_smoothing)
    phase = cfg.phase
    steps_per_epoch = math.ceil(len(epoch_order(len(train), cfg.batch_size, rng)) / cfg.batch_size)
    history, step = [], 0
    bar = tqdm(range(1, phase.epochs + 1), desc=f"partseg, seed {seed}", unit="epoch", disable=None, leave=False)
    for epoch in bar:
        model.train()
        loss_sum, seen = torch.zeros((), device=device), 0
        for points, counts, parts, categories in part_batches(train, cfg.batch_size, device,
                                                              epoch_order(len(train), cfg.batch_size, rng)):
            for group in optimizer.param_groups:
                group["lr"] = phase.lr(step, steps_per_epoch)
            points, counts, parts = subsample_parts(points, counts, parts, cfg.input, generator)
            with autocast(device, cfg.bf16):
                logits = model(points, counts, categories, generator, cfg.train_aug).float()
            loss = loss_fn(logits.flatten(0, 1), parts.flatten())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach() * len(categories)
            seen += len(categories)
            step += 1
        record = {"epoch": epoch, "loss": loss_sum.item() / max(seen, 1)}
        if cfg.eval_every and epoch % cfg.eval_every == 0 and epoch < phase.epochs:
            record.update(predict_parts(model, test, cfg, device, seed).scores.headline())
        history.append(record)
        bar.set_postfix({k: v for k, v in record.items() if k != "epoch"}, refresh=False)
    final = predict_parts(model, test, cfg, device, seed)
    if cfg.eval_every:
        history[-1].update(final.scores.headline())
    return PartRunResult(seed, final, history)
