"""DGCNN's classification feature extractor (Wang et al. 2019, "Dynamic Graph CNN for Learning on Point
Clouds") as a point backbone: EdgeConv layers on k-NN graphs rebuilt in each layer's feature space."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from model.backbone import PointBackbone, PointCloud, fill_padding
from model.config import DGCNNConfig
from model.point_layers import MaskedBatchNorm, PointLayer


def knn(x: Tensor, valid: Tensor, k: int) -> Tensor:
    """(C, N, k) indices of each point's k nearest valid points in the features x (C, N, F), nearest first.

    Squared distances |x_i|^2 + |x_j|^2 - 2 x_i.x_j per crop, ties to the lower index: points are ranked by
    (distance bits, index) keys as in `model.patchify.knn_group`, built in one op as bits * N + index with
    padded points pushed past every valid key (whatever their features hold). The point itself is its own
    nearest neighbour. Where a crop has fewer than k valid points, the missing slots repeat the nearest
    valid neighbour, which leaves the max over neighbours unchanged.
    """
    c, n, _ = x.shape
    with torch.no_grad():
        sq = x.square().sum(-1)
        dist = (sq[:, :, None] + sq[:, None, :]).baddbmm_(x, x.transpose(1, 2), alpha=-2).float().clamp_min_(0)
        # Non-negative floats order as their int32 bits; a padded column's offset exceeds 2^31 N.
        offset = torch.arange(n, device=x.device) + (~valid[:, None, :]) * (n << 32)
        keys = torch.add(offset, dist.view(torch.int32), alpha=n)
        idx = keys.topk(min(k, n), dim=-1, largest=False, sorted=True).indices
    nearest = idx[..., :1]
    idx = torch.where(valid.gather(1, idx.view(c, -1)).view_as(idx), idx, nearest)
    return torch.cat([idx, nearest.expand(-1, -1, k - idx.shape[-1])], dim=-1)


def crop_offsets(idx: Tensor) -> Tensor:
    """The (C, N, k) neighbour indices as one flat index into the crops' (C N, F) rows."""
    c, n, _ = idx.shape
    return (idx + torch.arange(0, c * n, n, device=idx.device)[:, None, None]).view(-1)


def neighbour_sums(rows: Tensor, flat: Tensor, k: int) -> Tensor:
    """(C N, F): each point's sum of `rows` over its k neighbours (`flat` from `crop_offsets`), in one
    gather-sum that builds no (C N k, F) tensor."""
    return F.embedding_bag(flat.view(-1, k), rows, mode="sum")


def incoming_sums(rows: Tensor, flat: Tensor, k: int) -> Tensor:
    """(C N, F): for each point j, the sum of `rows` over the points that have j as a neighbour (a repeated
    neighbour counts each time), the transpose of `neighbour_sums`: bags of sources grouped by target."""
    sizes = torch.bincount(flat, minlength=rows.shape[0])
    return F.embedding_bag(flat.argsort(stable=True) // k, rows, sizes.cumsum(0) - sizes, mode="sum")


def edge_statistics(a: Tensor, b: Tensor, sums: Tensor, counts: Tensor, valid: Tensor, k: int) -> tuple[Tensor, ...]:
    """Mean, biased and unbiased variance of the edges y_ij = a_j + b_i over valid points i, from per-point
    rows: a_j counts `counts`_j times, b_i k times, their cross term is b_i . `sums`_i (S_i = sum_j a_j).

    Both halves are centred on their own means and summed in float64, so the variance keeps the precision
    of a two-pass one even where a_j and b_i nearly cancel (y_ij = W1 (x_j - x_i) + W2 x_i)."""
    edges = (valid.sum() * k).double()
    m = edges.clamp_min(1)
    counts = counts.double()
    a = torch.where(counts > 0, a, 0).double()
    b = torch.where(valid, b, 0).double()
    mean_a = (counts * a).sum(0) / m
    mean_b = b.sum(0) * k / m
    b = torch.where(valid, b - mean_b, 0)
    cross = (b * torch.where(valid, sums.double() - k * mean_a, 0)).sum(0)
    var = ((counts * (a - mean_a).square()).sum(0) + k * b.square().sum(0) + 2 * cross) / m
    unbiased = var * edges / (edges - 1).clamp_min(1)
    return mean_a + mean_b, var, unbiased


class EdgeNormActMax(torch.autograd.Function):
    """For each point i, the max over its neighbours j of LeakyReLU(masked batch norm(a_j + b_i)), the edges
    y_ij = a_j + b_i never built: per channel, batch norm is affine with scale s = gamma / std and
    LeakyReLU non-decreasing, so the max is the activation of the normalised (max_j a_j) + b_i, or of
    (min_j a_j) + b_i where s < 0; the edge statistics come from per-point sums (`edge_statistics`).

    The backward is that of the unfused layers (`MaskedBatchNormFunction` then amax): the selected
    neighbour of each channel takes the direct gradient (one of them on an exact tie, where amax would
    split it), and the statistics' per-edge terms c1 + c2 (y_ij - mean), over valid points' outputs, are
    summed per neighbour and per center from the same per-point sums. Padded points contribute no edges;
    knn never makes them neighbours.
    """

    @staticmethod
    def forward(ctx, neighbour, center, idx, valid, weight, bias, running, eps, slope):
        k, dtype = idx.shape[-1], torch.promote_types(neighbour.dtype, torch.float32)
        a, b = (t.reshape(-1, t.shape[-1]).to(dtype) for t in (neighbour, center))
        flat, valid = crop_offsets(idx), valid.reshape(-1, 1)
        sign = torch.where(weight < 0, -1.0, 1.0).to(dtype)
        extreme, slot = (a * sign).index_select(0, flat).view(-1, k, a.shape[1]).max(1)
        extreme *= sign
        chosen = flat.view(-1, k).gather(1, slot)
        counts = sums = None
        if running is None:
            counts = torch.bincount(flat, valid.expand(-1, k).reshape(-1).to(dtype), a.shape[0])[:, None]
            sums = neighbour_sums(a, flat, k)
            mean, var, unbiased = (t.to(dtype) for t in edge_statistics(a, b, sums, counts, valid, k))
        else:  # copies: the running estimates may change before the backward
            mean, var = (t.to(dtype, copy=True) for t in running)
        invstd = torch.rsqrt(var + eps)
        scale = weight * invstd
        out = F.leaky_relu(torch.addcmul(bias - mean * scale, extreme + b, scale), slope)
        ctx.save_for_backward(a, b, extreme, chosen, out, scale, mean, invstd, flat, valid, counts, sums)
        ctx.k, ctx.slope = k, slope
        ctx.inputs = (neighbour.shape, neighbour.dtype), (center.shape, center.dtype)
        result = out.view(center.shape).to(center.dtype)
        if running is not None:
            return result
        ctx.mark_non_differentiable(mean, unbiased)
        return result, mean, unbiased

    @staticmethod
    @once_differentiable
    def backward(ctx, dout, *_):
        a, b, extreme, chosen, out, scale, mean, invstd, flat, valid, counts, sums = ctx.saved_tensors
        g = dout.reshape(out.shape).to(out.dtype)
        g = torch.where(out > 0, g, g * ctx.slope)
        centred = extreme + b - mean
        grad_weight = (g * centred).sum(0) * invstd
        grad_bias = g.sum(0)
        grad_b = g * scale
        grad_a = torch.zeros_like(a).scatter_add_(0, chosen, grad_b)
        if sums is not None:  # training: the batch statistics depend on a and b
            da, db = statistics_gradient(g, centred, a, b, scale, mean, invstd, flat, valid, counts, sums, ctx.k)
            grad_a += da
            grad_b += db
        (a_shape, a_dtype), (b_shape, b_dtype) = ctx.inputs
        return (grad_a.view(a_shape).to(a_dtype), grad_b.view(b_shape).to(b_dtype), None, None,
                grad_weight, grad_bias, None, None, None)


def statistics_gradient(g: Tensor, centred: Tensor, a: Tensor, b: Tensor, scale: Tensor, mean: Tensor,
                        invstd: Tensor, flat: Tensor, valid: Tensor, counts: Tensor, sums: Tensor,
                        k: int) -> tuple[Tensor, Tensor]:
    """The gradients of a and b through the batch mean and variance: as in `MaskedBatchNormFunction`, every
    valid edge gets c1 + c2 (y_ij - mean), from the valid outputs' gradients g (before the scale) and
    their centred pre-norm values; summed per neighbour j (counts_j times a_j, plus the incoming b_i) and
    per center i (k times b_i, plus S_i)."""
    m = (valid.sum() * k).clamp_min(1)
    c1 = -scale * torch.where(valid, g, 0).sum(0) / m
    c2 = -scale * invstd.square() * torch.where(valid, g * centred, 0).sum(0) / m
    incoming = incoming_sums(torch.where(valid, b, 0), flat, k)
    grad_a = torch.where(counts > 0, counts * (c1 + c2 * (a - mean)) + c2 * incoming, 0)
    grad_b = torch.where(valid, k * (c1 + c2 * (b - mean)) + c2 * sums, 0)
    return grad_a, grad_b


def edge_norm_act_max(neighbour: Tensor, center: Tensor, idx: Tensor, valid: Tensor, norm: MaskedBatchNorm,
                      negative_slope: float) -> Tensor:
    """(C, N, out): the max over idx's (C, N, k) neighbours of LeakyReLU(norm(neighbour_j + center_i)), with
    `norm`'s batch statistics over the edges of valid points in training (its running estimates
    updated), its running ones in eval; see `EdgeNormActMax`."""
    if not norm.training:
        running = (norm.running_mean, norm.running_var)
        return EdgeNormActMax.apply(neighbour, center, idx, valid, norm.weight, norm.bias, running, norm.eps,
                                    negative_slope)
    out, mean, unbiased = EdgeNormActMax.apply(neighbour, center, idx, valid, norm.weight, norm.bias, None,
                                               norm.eps, negative_slope)
    norm.track(mean, unbiased)
    return out


class EdgeConv(nn.Module):
    """EdgeConv: for each point i and neighbour j, [x_j - x_i, x_i] -> linear (no bias) -> batch norm ->
    LeakyReLU, then the max over the k neighbours.

    The linear W [x_j - x_i, x_i] equals W1 x_j + (W2 - W1) x_i, so both products are computed once per
    point, and `edge_norm_act_max` normalises, activates and pools without building the (C, N, k, out)
    edges: the same maths as a linear on every edge, with N instead of N k matrix products per crop. The
    full `nn.Linear(2F, out)`, `MaskedBatchNorm` and `nn.LeakyReLU` are kept so the parameters, buffers and
    checkpoints are the published layer's.
    """

    def __init__(self, in_dim: int, out_dim: int, k: int, negative_slope: float) -> None:
        super().__init__()
        self.k = k
        self.linear = nn.Linear(2 * in_dim, out_dim, bias=False)
        self.norm = MaskedBatchNorm(out_dim)
        self.activation = nn.LeakyReLU(negative_slope)

    def forward(self, x: Tensor, valid: Tensor) -> Tensor:
        """(C, N, F) features -> (C, N, out); batch-norm statistics over the edges of valid points."""
        f = x.shape[-1]
        idx = knn(x, valid, self.k)
        w_neighbour, w_center = self.linear.weight[:, :f], self.linear.weight[:, f:]
        neighbour = F.linear(x, w_neighbour)
        center = F.linear(x, w_center - w_neighbour)
        return edge_norm_act_max(neighbour, center, idx, valid, self.norm, self.activation.negative_slope)


class DGCNN(PointBackbone):
    """EdgeConv layers (the first graph in xyz), their outputs concatenated into a per-point linear (no
    bias) -> batch norm -> LeakyReLU to `global_dim`; the global embedding concatenates max and average
    pooling, as the classifier does."""

    embedding_pooling = ("max", "mean")

    def __init__(self, cfg: DGCNNConfig) -> None:
        super().__init__()
        self.dim = cfg.global_dim
        dims = [3, *cfg.edge_widths]
        self.edge_convs = nn.ModuleList(
            EdgeConv(i, o, cfg.k, cfg.negative_slope) for i, o in zip(dims[:-1], dims[1:])
        )
        self.out = PointLayer(sum(cfg.edge_widths), cfg.global_dim, False, nn.LeakyReLU(cfg.negative_slope))

    def forward(self, cloud: PointCloud) -> Tensor:
        """(C, N, global_dim) per-point features; padded rows hold the mean of the valid ones."""
        valid = cloud.valid
        x = cloud.points
        features = []
        for conv in self.edge_convs:
            x = conv(x, valid)
            features.append(x)
        return fill_padding(self.out(torch.cat(features, dim=-1), valid), valid)
