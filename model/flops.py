"""Analytic training FLOPs of one AsymDSD or Distillation-with-Contrast step, for MFU and the model summary.

Counts what `torch.utils.flop_counter.FlopCounterMode` counts, no more: matmuls (2 m n k each) and
scaled-dot-product attention with torch's formulas (forward QK^T and PV; backward recomputes QK^T plus
four gradient matmuls). Norms, softmax, elementwise ops and FPS/kNN patchify are not counted.

These are model FLOPs, the usual MFU numerator: the recomputation of activation checkpointing
(`loss.patch_loss_chunk`, `tokenizer.checkpoint`, `encoder.checkpoint_blocks`) is not counted. The
efficient drop path is counted as executed: only the kept rows run a branch, in the student and, when
`teacher.drop_path` is set, in the teacher. The contrastive term's negatives are one rank's batch.
Point networks run on every row of their padded crops, so their FLOPs follow the crop sizes; DGCNN's k-NN
distance matmuls count (no gradient), its EdgeConv linears as the two per-point halves it computes.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from model.config import ModelConfig
from model.encoder import drop_path_rates
from model.masking import mask_counts


@dataclass(frozen=True)
class Cost:
    """Forward and backward FLOPs of one piece of the step."""

    forward: int = 0
    backward: int = 0

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.forward + other.forward, self.backward + other.backward)


def linear(rows: int, in_dim: int, out_dim: int, input_grad: bool = True) -> Cost:
    """A linear layer on `rows` rows; backward: the weight gradient, plus the input's if it needs one."""
    flops = 2 * rows * in_dim * out_dim
    return Cost(flops, 2 * flops if input_grad else flops)


def attention(seqs: int, q_len: int, kv_len: int, dim: int) -> Cost:
    """Scaled-dot-product attention over `dim` channels (all heads): 2 matmuls forward, 5 backward."""
    matmul = 2 * seqs * q_len * kv_len * dim
    return Cost(2 * matmul, 5 * matmul)


def chain(rows: int, dims: list[int]) -> Cost:
    """Consecutive linears dims[0] -> dims[1] -> ... on the same rows."""
    return sum((linear(rows, a, b) for a, b in zip(dims, dims[1:])), Cost())


def embedding_cost(cfg: ModelConfig, crops: int, patches: int) -> Cost:
    """Mini-PointNet on every point of `crops * patches` patches, plus the positional MLP on their centres.

    The first layer of each network sees raw coordinates, so its backward is the weight gradient only;
    later stages split their first layer into a per-point and a once-per-patch (pooled) half.
    """
    tok, dim = cfg.tokenizer, cfg.encoder.dim
    groups = crops * patches
    points = groups * cfg.patchify.patch_size
    cost = Cost()
    in_dim = 3
    for i, widths in enumerate(tok.hidden_dims):
        dims = [in_dim, *widths] + ([dim] if i == len(tok.hidden_dims) - 1 else [])
        if i == 0:
            cost += linear(points, 3, dims[1], input_grad=False)
        else:
            half = in_dim // 2
            cost += linear(points, half, dims[1]) + linear(groups, half, dims[1])
        cost += chain(points, dims[1:])
        in_dim = 2 * dims[-1]
    hidden = tok.pos_hidden_dim
    return cost + linear(groups, 3, hidden, input_grad=False) + linear(groups, hidden, dim)


def encoder_cost(cfg: ModelConfig, seqs: int, tokens: int, drop_path: bool) -> Cost:
    """Transformer blocks on `seqs` sequences of `tokens` tokens (CLS included).

    With drop path active and p >= 0.1, each branch runs on max(1, round((1 - p) seqs)) sequences
    (model/layers.py `residual_drop_path`); below 0.1 every sequence runs it.
    """
    enc = cfg.encoder
    d, hidden = enc.dim, int(enc.dim * enc.mlp_ratio)
    cost = Cost()
    for p in drop_path_rates(enc):
        rows = max(1, round((1.0 - p) * seqs)) if drop_path and p >= 0.1 else seqs
        n = rows * tokens
        cost += linear(n, d, 3 * d) + attention(rows, tokens, tokens, d) + linear(n, d, d)
        cost += linear(n, d, hidden) + linear(n, hidden, d)
    return cost


def predictor_cost(cfg: ModelConfig, views: int, queries: int, memory: int) -> Cost:
    """Cross-attention predictor: `queries` masked positions per view attend to `memory` encoder outputs."""
    pred, d = cfg.predictor, cfg.encoder.dim
    dp, hidden = pred.dim, int(pred.dim * pred.mlp_ratio)
    q, m = views * queries, views * memory
    cost = linear(q, d, dp) + linear(m, d, dp) + linear(1, d, dp)  # positions, memory, mask token
    for _ in range(pred.depth):
        cost += linear(q, dp, dp) + linear(m, dp, 2 * dp)  # queries; keys and values of the memory
        cost += attention(views, queries, memory, dp) + linear(q, dp, dp)
        cost += linear(q, dp, hidden) + linear(q, hidden, dp)
    return cost + linear(q, dp, d)


def head_cost(cfg: ModelConfig, rows: int, in_dim: int | None = None) -> Cost:
    """DINO head on `in_dim`-wide rows (the encoder width by default): MLP to the bottleneck, then the
    (weight-normalised) prototype layer."""
    h = cfg.head
    return chain(rows, [in_dim or cfg.encoder.dim, h.hidden_dim, h.hidden_dim, h.bottleneck_dim, h.num_prototypes])


def point_network_cost(cfg: ModelConfig, crops: int, points: int) -> Cost:
    """PointNet or DGCNN on `crops` padded crops of `points` rows; the coordinates need no gradient."""
    rows = crops * points
    if cfg.backbone == "pointnet":
        dims = [3, *cfg.pointnet.widths]
        return sum((linear(rows, a, b, input_grad=i > 0) for i, (a, b) in enumerate(zip(dims, dims[1:]))), Cost())
    d = cfg.dgcnn
    dims = [3, *d.edge_widths]
    cost = Cost()
    for i, (a, b) in enumerate(zip(dims, dims[1:])):
        cost += Cost(2 * crops * points * points * a, 0)  # pairwise distances for the k-NN graph
        cost += linear(rows, a, b, input_grad=i > 0) + linear(rows, a, b, input_grad=i > 0)
    return cost + linear(rows, sum(d.edge_widths), d.global_dim)


@dataclass(frozen=True)
class StepFlops:
    """FLOPs of one training step on `batch_size` shapes: teacher forward, student forward and backward."""

    batch_size: int
    teacher_tokenizer: int  # patch embedding + positional MLP of the global crops
    teacher_encoder: int
    teacher_heads: int
    student_tokenizer: int  # global and local crops
    student_encoder: int  # unmasked global crop(s), masked views, local crops
    predictor: int
    student_heads: int  # CLS head on every CLS view, patch head on the predictions
    losses: int  # KoLeo similarities, contrastive logits
    student_backward: int

    @classmethod
    def of(cls, batch_size: int, **costs: Cost) -> StepFlops:
        """Each component's forward FLOPs, and the backward of every component but the teacher's."""
        backward = sum(c.backward for name, c in costs.items() if not name.startswith("teacher_"))
        return cls(batch_size, **{name: c.forward for name, c in costs.items()}, student_backward=backward)

    def components(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "batch_size"}

    @property
    def total(self) -> int:
        return sum(self.components().values())

    @property
    def per_shape(self) -> float:
        return self.total / self.batch_size


def training_flops(cfg: ModelConfig, batch_size: int, crop_points: tuple[int, int] | None = None) -> StepFlops:
    """Per-component FLOPs of one step, following the method's student and teacher forwards (for AsymDSD, in
    `cfg.mode`). `crop_points` (global, local) sizes a point network's crops; by default 16 points per patch
    of the patch counts (1,024 and 256 for S)."""
    if cfg.method == "dwc":
        pc = cfg.patchify
        return dwc_flops(cfg, batch_size, crop_points or (16 * pc.global_patches, 16 * pc.local_patches))
    b, cg, d = batch_size, cfg.num_global_crops, cfg.encoder.dim
    p, cls = cfg.patchify.global_patches, int(cfg.encoder.cls_token)
    num_local = cfg.num_local_crops if cfg.uses_cls else 0

    teacher_tokenizer = embedding_cost(cfg, b * cg, p)
    teacher_encoder = encoder_cost(cfg, b * cg, cls + p, cfg.teacher.drop_path)
    teacher_heads = (head_cost(cfg, b * cg) if cfg.uses_cls else Cost()) + (
        head_cost(cfg, b * cg * p) if cfg.uses_masking else Cost()
    )

    student_tokenizer = embedding_cost(cfg, b * cg, p)
    student_encoder = predictor = patch_head = Cost()
    cls_views = koleo_slots = 0
    if cfg.mode == "cls":
        student_encoder = encoder_cost(cfg, b * cg, cls + p, True)
        cls_views = koleo_slots = cg
    else:
        counts = mask_counts(p, cfg.masking)
        views = b * cg * cfg.masking.num_masks
        memory = cls + counts.num_visible
        student_encoder = encoder_cost(cfg, views, memory, True)
        predictor = predictor_cost(cfg, views, counts.num_masked, memory)
        patch_head = head_cost(cfg, views * counts.num_masked)
        if cfg.mode == "cls_mask":
            student_encoder += encoder_cost(cfg, b, cls + p, True)  # global crop 0, unmasked
            cls_views = koleo_slots = 1 + cg * cfg.masking.num_masks
    if num_local:
        student_tokenizer += embedding_cost(cfg, b * num_local, cfg.patchify.local_patches)
        student_encoder += encoder_cost(cfg, b * num_local, 1 + cfg.patchify.local_patches, True)
        cls_views += num_local
    student_heads = patch_head + (head_cost(cfg, b * cls_views) if cfg.uses_cls else Cost())

    losses = Cost()
    if cfg.uses_cls and cfg.loss.koleo_weight > 0 and b > 1:
        losses += Cost(2 * koleo_slots * b * b * d, 0)  # nearest-neighbour search, no grad
    if cfg.uses_cls and cfg.loss.contrast.weight > 0:
        logits = 2 * b * cls_views * d * cg * b  # every student CLS view against every teacher crop
        losses += Cost(logits, logits)  # backward: the student side only, the teacher's is detached

    return StepFlops.of(b, teacher_tokenizer=teacher_tokenizer, teacher_encoder=teacher_encoder,
                        teacher_heads=teacher_heads, student_tokenizer=student_tokenizer,
                        student_encoder=student_encoder, predictor=predictor, student_heads=student_heads,
                        losses=losses)


def dwc_flops(cfg: ModelConfig, batch_size: int, crop_points: tuple[int, int]) -> StepFlops:
    """Distillation with Contrast (`model.dwc`): teacher on the global crops, student on every crop, one head
    per embedding, the contrastive logits of every student view against every teacher crop."""
    b, cg, cl = batch_size, cfg.num_global_crops, cfg.num_local_crops
    views = cg + cl
    tokenizer = Cost()
    if cfg.backbone == "vit":
        pc, cls = cfg.patchify, int(cfg.encoder.cls_token)
        teacher_tokenizer = embedding_cost(cfg, b * cg, pc.global_patches)
        teacher_encoder = encoder_cost(cfg, b * cg, cls + pc.global_patches, cfg.teacher.drop_path)
        tokenizer = teacher_tokenizer + (embedding_cost(cfg, b * cl, pc.local_patches) if cl else Cost())
        student_encoder = encoder_cost(cfg, b * cg, cls + pc.global_patches, True)
        if cl:
            student_encoder += encoder_cost(cfg, b * cl, cls + pc.local_patches, True)
        width = cfg.encoder.dim
    else:
        teacher_tokenizer = Cost()
        teacher_encoder = point_network_cost(cfg, b * cg, crop_points[0])
        student_encoder = teacher_encoder + (point_network_cost(cfg, b * cl, crop_points[1]) if cl else Cost())
        width = (cfg.pointnet.widths[-1] if cfg.backbone == "pointnet" else 2 * cfg.dgcnn.global_dim)
    teacher_heads = head_cost(cfg, b * cg, width)
    student_heads = head_cost(cfg, b * views, width)
    losses = Cost()
    if cfg.loss.contrast.weight > 0:
        logits = 2 * b * views * width * cg * b
        losses = Cost(logits, logits)
    return StepFlops.of(b, teacher_tokenizer=teacher_tokenizer, teacher_encoder=teacher_encoder,
                        teacher_heads=teacher_heads, student_tokenizer=tokenizer, student_encoder=student_encoder,
                        predictor=Cost(), student_heads=student_heads, losses=losses)
