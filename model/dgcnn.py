"""DGCNN's classification feature extractor (Wang et al. 2019, "Dynamic Graph CNN for Learning on Point
Clouds") as a point backbone: EdgeConv layers on k-NN graphs rebuilt in each layer's feature space."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

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


class EdgeConv(nn.Module):
    """EdgeConv: for each point i and neighbour j, [x_j - x_i, x_i] -> linear (no bias) -> batch norm ->
    LeakyReLU, then the max over the k neighbours.

    The linear W [x_j - x_i, x_i] equals W1 x_j + (W2 - W1) x_i, so both products are computed once per
    point and only the neighbour half is gathered per edge: the same maths as a linear on every edge, with
    N instead of N k matrix products per crop and no (C, N, k, 2F) edge tensor. The full
    `nn.Linear(2F, out)` is kept so the parameters are the published layer's.
    """

    def __init__(self, in_dim: int, out_dim: int, k: int, negative_slope: float) -> None:
        super().__init__()
        self.k = k
        self.linear = nn.Linear(2 * in_dim, out_dim, bias=False)
        self.norm = MaskedBatchNorm(out_dim)
        self.activation = nn.LeakyReLU(negative_slope)

    def forward(self, x: Tensor, valid: Tensor) -> Tensor:
        """(C, N, F) features -> (C, N, out); batch-norm statistics over the edges of valid points."""
        c, n, f = x.shape
        idx = knn(x, valid, self.k)
        w_neighbour, w_center = self.linear.weight[:, :f], self.linear.weight[:, f:]
        neighbour = F.linear(x, w_neighbour)
        center = F.linear(x, w_center - w_neighbour)
        out = neighbour.shape[-1]
        gathered = neighbour.gather(1, idx.view(c, -1, 1).expand(-1, -1, out)).view(c, n, self.k, out)
        edges = gathered + center[:, :, None]
        return self.activation(self.norm(edges, valid[:, :, None])).amax(dim=2)


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
