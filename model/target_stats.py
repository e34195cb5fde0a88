"""Statistics of the teacher's distillation targets: the cross-entropy decomposition that shows collapse.

For targets t (the teacher's centred, sharpened softmax over K prototypes) and a loss
CE = mean H(t, s), the decomposition of the official AsymDSD (remcofl/AsymDSD,
`asymdsd/callbacks/ce_decomposition_logger.py`) is

* target entropy H(t): the mean over target rows of each row's entropy (ln K for uniform targets,
  0 for one-hot ones);
* marginal entropy H(mean t): the entropy of the mean target over the global batch (near 0 when every
  sample gets the same prototype: collapse);
* KL = CE - H(t): what the student still has to learn.

The rows are the ones the losses read: every teacher CLS distribution (B * Cg rows; in 'cls_mask' mode
crop 1 takes part in one more CLS pairing than crop 0, so there KL is CE minus the mean over both crops,
as in the official logger), and the patch distribution at each masked position of each masked view
(a position masked in two views counts twice, as in the patch loss). The per-position weights avoid
gathering the (R * Q, K) copy the official code holds.

`teacher_target_stats` returns sums (entropies, row counts, target vectors; fp64) that add over
micro-batches and over ranks, so the marginal entropy is that of the mean over the whole global batch.
The entropies use 0 log 0 = 0 (no epsilon is added), and rows are taken in chunks so no temporary
larger than `CHUNK_ELEMENTS` floats is made.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from model.teacher_student import TeacherOutput
from model.losses import masked_target_rows

CHUNK_ELEMENTS = 1 << 22  # floats per temporary (16 MiB in fp32)


@dataclass(frozen=True)
class TargetStats:
    """Sums over the target rows of one head, in fp64: add them over micro-batches, sum them over ranks."""

    entropy_sum: Tensor  # () sum of the rows' entropies
    rows: Tensor  # () number of rows (with their weights)
    prob_sum: Tensor  # (K,) sum of the target distributions

    def __add__(self, other: TargetStats) -> TargetStats:
        return TargetStats(self.entropy_sum + other.entropy_sum, self.rows + other.rows,
                           self.prob_sum + other.prob_sum)

    def pack(self) -> Tensor:
        """One (K + 2,) vector: [entropy_sum, rows, prob_sum...] (for a single all-reduce)."""
        return torch.cat([self.entropy_sum[None], self.rows[None], self.prob_sum])

    @classmethod
    def unpack(cls, packed: Tensor) -> TargetStats:
        return cls(packed[0], packed[1], packed[2:])


@dataclass(frozen=True)
class Decomposition:
    entropy: float  # mean target entropy H(t)
    marginal_entropy: float  # entropy of the mean target H(mean t)
    kl: float  # cross-entropy - H(t)


def target_stats(probs: Tensor, weights: Tensor | None = None) -> TargetStats:
    """Sums over the rows of (N, K) probabilities, each row counted `weights[n]` times (default once)."""
    k = probs.shape[-1]
    probs = probs.reshape(-1, k)
    if weights is None:
        weights = probs.new_ones(probs.shape[0])
    entropy_sum = probs.new_zeros((), dtype=torch.float64)
    prob_sum = probs.new_zeros(k, dtype=torch.float64)
    chunk = max(1, CHUNK_ELEMENTS // k)
    for p, w in zip(probs.float().split(chunk), weights.float().split(chunk)):
        row_entropy = torch.special.entr(p).sum(-1, dtype=torch.float64)
        entropy_sum += (w.double() * row_entropy).sum()
        prob_sum += (w[:, None] * p).sum(0, dtype=torch.float64)
    return TargetStats(entropy_sum, weights.sum(dtype=torch.float64), prob_sum)


def teacher_target_stats(teacher: TeacherOutput, masked_idx: Tensor | None) -> dict[str, TargetStats]:
    """Target statistics of each head the teacher produced targets for ('cls', 'patch'); `masked_idx` are the
    masked views' positions (`Views.masked_idx`), where there are patch targets."""
    stats: dict[str, TargetStats] = {}
    if teacher.cls_probs is not None:
        stats["cls"] = target_stats(teacher.cls_probs)
    if teacher.patch_probs is not None:
        crops, num_patches, _ = teacher.patch_probs.shape
        rows = masked_target_rows(masked_idx, masked_idx.shape[0] // crops, num_patches)
        weights = torch.zeros(crops * num_patches, device=rows.device).index_add_(
            0, rows, torch.ones(rows.shape, device=rows.device))  # how often each position is a target
        stats["patch"] = target_stats(teacher.patch_probs, weights)
    return stats


def accumulate(total: dict[str, TargetStats] | None, new: dict[str, TargetStats]) -> dict[str, TargetStats]:
    """Per-head sums of two micro-batches (`total` None: the first)."""
    return new if total is None else {head: total[head] + new[head] for head in new}


def decompose(stats: TargetStats, cross_entropy: float) -> Decomposition:
    """Target entropy, marginal entropy and KL of one head, from its (global) sums and its mean cross-entropy."""
    mean = stats.prob_sum / stats.rows
    entropy = (stats.entropy_sum / stats.rows).item()
    marginal = torch.special.entr(mean).sum().item()
    return Decomposition(entropy, marginal, cross_entropy - entropy)
