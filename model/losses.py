"""AsymDSD loss terms and the Distillation-with-Contrast InfoNCE term.

All terms are computed in fp32 whatever the autocast dtype. H(t, s) = -sum_k t_k log s_k.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint


def student_log_probs(logits: Tensor, temperature: float) -> Tensor:
    return F.log_softmax(logits.float() / temperature, dim=-1)


def teacher_probs(centered_logits: Tensor, temperature: float) -> Tensor:
    return F.softmax(centered_logits.float() / temperature, dim=-1)


def pairwise_cross_entropy(teacher: Tensor, student_logp: Tensor) -> Tensor:
    """Mean of H(T[b, i], S[b, j]) over samples b and all (i, j) pairs, the diagonal included.

    teacher (B, I, K) probabilities, student_logp (B, J, K) log-probabilities. The double sum
    factorises, so no (B, I, J, K) tensor is formed.
    """
    b, i, j = teacher.shape[0], teacher.shape[1], student_logp.shape[1]
    return -(teacher.sum(1) * student_logp.sum(1)).sum() / (b * i * j)


def masked_target_rows(masked_idx: Tensor, masks_per_crop: int, num_patches: int) -> Tensor:
    """Row of the flattened (crops * P, K) patch targets for every masked position, (R * Q,) view-major.

    masked_idx (R, Q) holds the masked positions of R = crops * masks_per_crop masked views.
    """
    crop = torch.arange(masked_idx.shape[0], device=masked_idx.device) // masks_per_crop
    return (crop[:, None] * num_patches + masked_idx).reshape(-1)


def patch_loss(
    head: nn.Module,
    predictions: Tensor,
    targets: Tensor,
    masked_idx: Tensor,
    masks_per_crop: int,
    student_temp: float,
    chunk_rows: int,
) -> Tensor:
    """Masked point modeling loss: mean over masked views v and masked positions j of H(t_vj, s_vj).

    predictions (R, Q, D) predictor outputs of R = crops * masks_per_crop masked views;
    targets (crops, P, K) teacher patch probabilities of the unmasked crops; masked_idx (R, Q).
    The patch head, softmax and cross-entropy run in checkpointed chunks of `chunk_rows` rows, so
    neither the (R Q, K) student logits nor gathered copies of the targets are kept for backward.
    """
    rows, q, d = predictions.shape
    target_rows = masked_target_rows(masked_idx, masks_per_crop, targets.shape[1])
    flat_targets = targets.reshape(-1, targets.shape[2])
    flat_pred = predictions.reshape(rows * q, d)

    def chunk_ce(pred: Tensor, idx: Tensor) -> Tensor:
        return -(flat_targets.index_select(0, idx) * student_log_probs(head(pred), student_temp)).sum()

    if chunk_rows <= 0 or not torch.is_grad_enabled():
        return chunk_ce(flat_pred, target_rows) / (rows * q)
    total = flat_pred.new_zeros((), dtype=torch.float32)
    for pred, idx in zip(flat_pred.split(chunk_rows), target_rows.split(chunk_rows)):
        total = total + checkpoint(chunk_ce, pred, idx, use_reentrant=False)
    return total / (rows * q)


def koleo_loss(embeddings: Tensor, eps: float = 1e-6) -> Tensor:
    """Kozachenko-Leonenko entropy regulariser on (B, S, D) embeddings, per slot S.

    For each slot, each L2-normalised embedding's nearest neighbour (max cosine similarity, itself
    excluded) is found among the B samples of that slot; loss = -mean log(||z - z_nn|| + eps).
    """
    z = F.normalize(embeddings.float(), dim=-1, eps=1e-8).transpose(0, 1)  # (S, B, D)
    with torch.no_grad():
        sims = z @ z.transpose(1, 2)
        sims.diagonal(dim1=1, dim2=2).fill_(-torch.inf)
        nearest = sims.argmax(dim=-1)
    neighbours = z.gather(1, nearest[..., None].expand_as(z))
    return -torch.log((z - neighbours).norm(dim=-1) + eps).mean()


def regression_loss(
    predictions: Tensor, features: Tensor, masked_idx: Tensor, masks_per_crop: int, beta: float
) -> Tensor:
    """Huber (smooth L1, `beta`) between predictor outputs and teacher patch features at masked positions.

    predictions (R, Q, D); features (crops, P, D) teacher final-layer patch features.
    """
    crop = torch.arange(predictions.shape[0], device=masked_idx.device) // masks_per_crop
    target = features[crop[:, None], masked_idx]
    return F.smooth_l1_loss(predictions.float(), target.float(), beta=beta)


def _gather_across_ranks(x: Tensor) -> tuple[Tensor, int]:
    """Concatenate (B, ...) tensors of all ranks (no gradient) and return this rank's row offset."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x, 0
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0), dist.get_rank() * x.shape[0]


def contrastive_loss(student: Tensor, view_crop: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """InfoNCE between student and teacher CLS embeddings of *different* crops (Distillation with Contrast).

    student (B, V, D) pre-head student CLS embeddings of V views; view_crop (V,) the global crop each
    view was cut from (-1 for local crops, which differ from every global crop); teacher (B, Cg, D)
    teacher CLS embeddings. For every view v and teacher crop i != view_crop[v], the positive is the
    same sample's teacher crop i and the negatives are crop i of every other sample in the global
    batch (all ranks). The teacher side carries no gradient.
    """
    s = F.normalize(student.float(), dim=-1)
    t_all, offset = _gather_across_ranks(F.normalize(teacher.detach().float(), dim=-1))
    logits = torch.einsum("bvd,nid->bvin", s, t_all) / temperature  # (B, V, Cg, N)
    b = s.shape[0]
    target = torch.arange(offset, offset + b, device=s.device)
    pairs = view_crop[:, None] != torch.arange(teacher.shape[1], device=s.device)[None, :]  # (V, Cg)
    per = F.cross_entropy(
        logits.permute(0, 3, 1, 2), target[:, None, None].expand(-1, *pairs.shape), reduction="none"
    )  # (B, V, Cg)
    return per[:, pairs].mean()
