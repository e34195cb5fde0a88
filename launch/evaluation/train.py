"""Training a head (and optionally the encoder) on labelled clouds: probes, fine-tuning, few-shot.

One loop serves every neural protocol; a protocol is a `NeuralConfig`: the head, the pooled features,
and a list of phases. A phase has its epoch count, whether the encoder is frozen, and its learning-rate
shape; the reference's ModelNet40 two-stage recipe is two phases (frozen head-only, then full
fine-tuning), everything else is one. The optimizer is AdamW over every parameter with weight decay
0.05 (norm scales and biases included, as in the reference), the loss cross-entropy with label
smoothing 0.2, and the learning rate is set every step from the phase's schedule. Each epoch's mean
training loss (and test accuracy, on the epochs `eval_every` tests) goes into the outcome's history,
which the report logs per epoch; a progress bar over the epochs shows on a terminal only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn
from tqdm import tqdm

from configuration import StrictModel
from launch.evaluation.data import LabelledSet
from launch.evaluation.features import Augmentation, InputSpec, Pooling, batches
from launch.evaluation.heads import HeadKind, PointClassifier
from model.config import ModelConfig
from model.backbone import Backbone
from model.backbones import build_backbone
from model.schedules import linear, warmup_cosine


class Phase(StrictModel):
    """Epochs with one learning-rate shape: warm-up then cosine, or a straight line start -> end."""

    epochs: int = Field(ge=1)
    frozen_encoder: bool
    shape: Literal["warmup_cosine", "linear"] = "warmup_cosine"
    start_lr: float = Field(0.0, ge=0)
    peak_lr: float = Field(0.0, ge=0, description="the end of the warm-up (warmup_cosine only)")
    end_lr: float = Field(ge=0)
    warmup_epochs: float = Field(0.0, ge=0)

    def lr(self, step: int, steps_per_epoch: int) -> float:
        total = self.epochs * steps_per_epoch
        if self.shape == "linear":
            return linear(step, total, self.start_lr, self.end_lr)
        warmup = round(self.warmup_epochs * steps_per_epoch)
        return warmup_cosine(step, total, warmup, self.start_lr, self.peak_lr, self.end_lr)


class NeuralConfig(StrictModel):
    """A trained-head protocol; the defaults follow the official AsymDSD code's classifier recipes
    (remcofl/AsymDSD, `asymdsd/models/neural_classifier.py` and its fine-tuning configs)."""

    head: HeadKind
    pooling: tuple[Pooling, ...] | None = Field(
        None, description="default: CLS + mean + max for a backbone with a CLS token, else its feature pooling")
    phases: list[Phase] = Field(min_length=1)
    input: InputSpec = InputSpec()
    train_aug: Augmentation = Augmentation()
    batch_size: int = Field(32, ge=2)
    weight_decay: float = Field(0.05, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    label_smoothing: float = Field(0.2, ge=0, lt=1)
    drop_path: float = Field(0.2, ge=0, lt=1, description="fine-tuned encoder, linear over depth")
    voting: int = Field(1, ge=1, description="test-time votes: >1 averages that many augmented passes")
    eval_every: int = Field(0, ge=0, description="also test every N epochs (0: only after the last)")
    bf16: bool = Field(True, description="bf16 autocast on CUDA (the reference trains in fp16)")

    def pooling_for(self, encoder: Backbone) -> tuple[Pooling, ...]:
        """The configured pooling, else CLS + mean + max (the reference's) for a backbone with a CLS token, else
        the backbone's feature pooling."""
        return self.pooling or (("cls", "mean", "max") if encoder.has_cls else encoder.feature_pooling)

    @property
    def epochs(self) -> int:
        return sum(p.epochs for p in self.phases)

    def with_epochs(self, epochs: int) -> NeuralConfig:
        """The same recipe over `epochs` in total: every phase and warm-up scaled alike (>= 1 epoch each)."""
        factor = epochs / self.epochs
        phases = [p.model_copy(update={"epochs": max(1, round(p.epochs * factor)),
                                       "warmup_epochs": p.warmup_epochs * factor}) for p in self.phases]
        return self.model_copy(update={"phases": phases})


@dataclass
class Predictions:
    accuracy: float
    mean_class_accuracy: float
    y_true: np.ndarray
    y_pred: np.ndarray


@dataclass
class TrainOutcome:
    final: Predictions
    model: PointClassifier  # the trained encoder + head, in eval mode
    history: list[dict] = field(default_factory=list)  # per epoch {"epoch", "loss"[, "accuracy"]}


def predictions(y_true: np.ndarray, y_pred: np.ndarray) -> Predictions:
    from sklearn.metrics import balanced_accuracy_score  # loads SciPy: only when a protocol runs

    return Predictions(float(np.mean(y_true == y_pred)) if len(y_true) else float("nan"),
                       float(balanced_accuracy_score(y_true, y_pred)) if len(y_true) else float("nan"),
                       y_true, y_pred)


def downstream_encoder(encoder: Backbone, cfg: ModelConfig, drop_path: float) -> Backbone:
    """A copy of `encoder` built as the reference fine-tunes it: for the ViT, drop path rising linearly
    over depth (point networks have none).

    Always a copy, so seeds and protocols start from the same weights.
    """
    enc_cfg = cfg.encoder
    if cfg.backbone == "vit":
        enc_cfg = enc_cfg.model_copy(update={"drop_path": drop_path, "drop_path_schedule": "linear"})
    copy = build_backbone(cfg.model_copy(update={"encoder": enc_cfg}))
    copy.load_state_dict(encoder.state_dict())
    return copy.to(next(encoder.parameters()).device)


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on CUDA when `enabled`; a no-op context elsewhere."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=enabled and device.type == "cuda")


@torch.no_grad()
def evaluate(model: PointClassifier, data: LabelledSet, cfg: NeuralConfig, device: torch.device,
             seed: int) -> Predictions:
    """Top-1 on `data`. With voting > 1, softmax averaged over that many augmented, re-sampled passes."""
    model.eval()
    generator = torch.Generator(device=device).manual_seed(seed)
    preds = []
    for points, counts, _ in batches(data, cfg.batch_size, device):
        probs = 0
        for vote in range(cfg.voting):
            aug = cfg.train_aug if vote > 0 else None
            with autocast(device, cfg.bf16):
                probs = probs + model(points, counts, generator, aug).float().softmax(-1)
        preds.append(probs.argmax(-1).cpu())
    y_pred = torch.cat(preds).numpy() if preds else np.zeros(0, np.int64)
    return predictions(data.labels, y_pred)


def epoch_order(n: int, batch_size: int, rng: np.random.Generator) -> np.ndarray:
    """A shuffled epoch; a trailing batch of one is dropped (BatchNorm cannot train on one sample)."""
    order = rng.permutation(n)
    return order[:-1] if n > batch_size and n % batch_size == 1 else order


def train_classifier(encoder: Backbone, model_cfg: ModelConfig, train: LabelledSet, test: LabelledSet,
                     cfg: NeuralConfig, device: torch.device | str, seed: int) -> TrainOutcome:
    """Train the configured head (and encoder, in unfrozen phases) on `train`; test on `test`."""
    device = torch.device(device)
    torch.manual_seed(seed)  # head initialisation and dropout
    rng = np.random.default_rng(seed)
    generator = torch.Generator(device=device).manual_seed(seed)
    model = PointClassifier(downstream_encoder(encoder, model_cfg, cfg.drop_path), cfg.head,
                            len(train.class_names), cfg.pooling_for(encoder), cfg.input).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.0, betas=cfg.betas, weight_decay=cfg.weight_decay)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    steps_per_epoch = math.ceil(len(epoch_order(len(train), cfg.batch_size, rng)) / cfg.batch_size)
    history, epoch = [], 0
    with tqdm(total=cfg.epochs, desc=f"{cfg.head} head, seed {seed}", unit="epoch", disable=None,
              leave=False) as bar:
        for phase in cfg.phases:
            model.set_frozen_encoder(phase.frozen_encoder)
            step = 0
            for _ in range(phase.epochs):
                model.train()
                loss_sum, seen = torch.zeros((), device=device), 0
                for points, counts, labels in batches(train, cfg.batch_size, device,
                                                      epoch_order(len(train), cfg.batch_size, rng)):
                    for group in optimizer.param_groups:
                        group["lr"] = phase.lr(step, steps_per_epoch)
                    with autocast(device, cfg.bf16):
                        loss = loss_fn(model(points, counts, generator, cfg.train_aug).float(), labels)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    loss_sum += loss.detach() * len(labels)
                    seen += len(labels)
                    step += 1
                epoch += 1
                record = {"epoch": epoch, "loss": loss_sum.item() / max(seen, 1)}
                if cfg.eval_every and epoch % cfg.eval_every == 0 and epoch < cfg.epochs:
                    record["accuracy"] = evaluate(model, test, cfg, device, seed).accuracy
                history.append(record)
                bar.set_postfix({k: v for k, v in record.items() if k != "epoch"}, refresh=False)
                bar.update()
    final = evaluate(model, test, cfg, device, seed)
    if cfg.eval_every:
        history[-1]["accuracy"] = final.accuracy
    return TrainOutcome(final, model.eval(), history)
