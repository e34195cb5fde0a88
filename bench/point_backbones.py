"""Point backbones' forward + backward: `MaskedBatchNorm`'s analytic backward against autograd, DGCNN's fused
EdgeConv against the unfused one, and DGCNN's kNN.

The masked batch norm's training statistics come from valid rows only. Written as plain tensor ops,
autograd records a chain of masked reductions and elementwise ops over every (C, N, k, F) edge tensor
of DGCNN, which dominated its CPU time; `model.point_layers.MaskedBatchNormFunction` computes the same
forward in a few passes and the backward analytically. `model.dgcnn.edge_norm_act_max` goes further and
builds no normalised or activated edge tensor at all. Timed, best of --rounds after a warm-up call:

* forward + backward (the global embedding summed) of PointNet and DGCNN at their default configs in
  train mode, the same network and crops once with each batch norm (DGCNN with `UnfusedEdgeConv` layers
  both times); crops hold between half and all of --points valid points. Embeddings and gradients are
  compared too: in float32, DGCNN's kNN graphs and max over neighbours turn rounding into a different
  choice where two candidates nearly tie, so its gradients differ by up to ~1e-3 of the largest (in
  float64 both agree to ~1e-14);
* DGCNN forward + backward with `UnfusedEdgeConv` layers (analytic batch norm) against the fused
  `EdgeConv`, same network and crops, compared the same way;
* the batch norm alone, forward + backward, on DGCNN's widest edge tensor (crops, points, k, 256) with
  its (C, N, 1) mask;
* `model.dgcnn.knn` on (crops, points, 64) features against its previous (distance bits, index) keys,
  built in three int64 passes after a masked fill; both must return the same indices.

    python -m bench.point_backbones --crops 16 --points 512

The last printed line is `RESULT {json}`; --json PATH also writes it to a file.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench.common import add_json_option, benchmark_main, best_of_rounds
from model.backbone import PointCloud
from model.config import DGCNNConfig, PointNetConfig
from model.dgcnn import DGCNN, EdgeConv, knn
from model.point_layers import MaskedBatchNorm
from model.pointnet import PointNet

BACKBONES = {"pointnet": lambda: PointNet(PointNetConfig()), "dgcnn": lambda: DGCNN(DGCNNConfig())}


class AutogradMaskedBatchNorm(MaskedBatchNorm):
    """The straightforward masked batch norm, differentiated by autograd: the baseline here and the
    reference of the tests."""

    def forward(self, x: Tensor, valid: Tensor) -> Tensor:
        y = x.to(torch.promote_types(x.dtype, torch.float32))
        if self.training:
            rows = valid.expand(x.shape[:-1])[..., None]
            dims = tuple(range(x.dim() - 1))
            count = rows.sum(dims).clamp_min(1)
            mean = torch.where(rows, y, 0).sum(dims) / count
            y = y - mean
            var = torch.where(rows, y.square(), 0).sum(dims) / count
            with torch.no_grad():
                unbiased = var * count / (count - 1).clamp_min(1)
                self.running_mean.mul_(1 - self.momentum).add_(self.momentum * mean)
                self.running_var.mul_(1 - self.momentum).add_(self.momentum * unbiased)
                self.num_batches_tracked.add_(1)
        else:
            mean, var = self.running_mean, self.running_var
            y = y - mean
        return (y * (self.weight * torch.rsqrt(var + self.eps)) + self.bias).to(x.dtype)


def with_autograd_norms(net: nn.Module) -> nn.Module:
    """A copy of `net` whose masked batch norms are `AutogradMaskedBatchNorm` (same parameters, buffers)."""
    net = copy.deepcopy(net)
    for module in net.modules():
        if type(module) is MaskedBatchNorm:
            module.__class__ = AutogradMaskedBatchNorm
    return net


class UnfusedEdgeConv(EdgeConv):
    """EdgeConv as it was before `model.dgcnn.edge_norm_act_max`: the neighbour half gathered to every edge,
    the center half added, then masked batch norm, LeakyReLU and the max over the (C, N, k, out) edges:
    the baseline here and the reference of the tests."""

    def forward(self, x: Tensor, valid: Tensor) -> Tensor:
        c, n, f = x.shape
        idx = knn(x, valid, self.k)
        w_neighbour, w_center = self.linear.weight[:, :f], self.linear.weight[:, f:]
        neighbour = F.linear(x, w_neighbour)
        center = F.linear(x, w_center - w_neighbour)
        out = neighbour.shape[-1]
        gathered = neighbour.gather(1, idx.view(c, -1, 1).expand(-1, -1, out)).view(c, n, self.k, out)
        edges = gathered + center[:, :, None]
        return self.activation(self.norm(edges, valid[:, :, None])).amax(dim=2)


def with_unfused_edge_convs(net: nn.Module) -> nn.Module:
    """A copy of `net` whose EdgeConv layers are `UnfusedEdgeConv` (same parameters, buffers)."""
    net = copy.deepcopy(net)
    for module in net.modules():
        if type(module) is EdgeConv:
            module.__class__ = UnfusedEdgeConv
    return net


def previous_knn(x: Tensor, valid: Tensor, k: int) -> Tensor:
    """`model.dgcnn.knn` as it was: padded columns filled with +inf, then (bits << 32) | index keys."""
    c, n, _ = x.shape
    with torch.no_grad():
        sq = x.square().sum(-1)
        dist = torch.baddbmm(sq[:, :, None] + sq[:, None, :], x, x.transpose(1, 2), alpha=-2)
        dist = dist.float().clamp_min(0).masked_fill(~valid[:, None, :], torch.inf)
        keys = (dist.view(torch.int32).long() << 32) | torch.arange(n, device=x.device)
        idx = keys.topk(min(k, n), dim=-1, largest=False, sorted=True).indices
    nearest = idx[..., :1]
    idx = torch.where(valid.gather(1, idx.view(c, -1)).view_as(idx), idx, nearest)
    return torch.cat([idx, nearest.expand(-1, -1, k - idx.shape[-1])], dim=-1)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--crops", type=int, default=16)
    parser.add_argument("--points", type=int, default=512, help="points per crop, padding included")
    parser.add_argument("--rounds", type=int, default=3, help="timed calls of each variant")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--backbones", nargs="*", choices=sorted(BACKBONES), default=sorted(BACKBONES))
    add_json_option(parser)
    return parser.parse_args(argv)


def crops(count: int, points: int, device: torch.device) -> PointCloud:
    """Uniform points in [-1, 1]^3, each crop with between half and all of `points` valid."""
    rng = torch.Generator().manual_seed(0)
    num_points = torch.randint(points // 2, points + 1, (count,), generator=rng)
    return PointCloud((torch.rand(count, points, 3, generator=rng) * 2 - 1).to(device), num_points.to(device))


def timed(fn: Callable[[], object], device: torch.device) -> tuple[float, object]:
    """Seconds of one call of `fn` (synchronised on CUDA) and what it returned."""
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    sync()
    start = time.perf_counter()
    result = fn()
    sync()
    return time.perf_counter() - start, result


def network_step(net: nn.Module, cloud: PointCloud) -> tuple[Tensor, list[Tensor]]:
    """One forward + backward of the summed embedding: the embedding and the parameters' gradients."""
    net.zero_grad(set_to_none=True)
    embedding = net.embedding(net(cloud))
    embedding.sum().backward()
    return embedding.detach(), [p.grad for p in net.parameters()]


def norm_step(norm: nn.Module, x: Tensor, valid: Tensor, grad: Tensor) -> None:
    x.grad = None
    norm(x, valid).backward(grad)


def compare(runs: dict[str, Callable[[], object]], rounds: int, device: torch.device) -> dict:
    """Best-of-rounds ms of the "baseline" and "ours" runs, their ratio, and their first results."""
    first = {name: run() for name, run in runs.items()}  # warm-up
    best = best_of_rounds(rounds, {name: lambda run=run: timed(run, device) for name, run in runs.items()})
    result = {f"{name}_ms": round(best[name][0] * 1e3, 1) for name in runs}
    result["speedup"] = round(best["baseline"][0] / best["ours"][0], 2)
    return result | {"first": first}


def relative_grad_diff(ours: list[Tensor], reference: list[Tensor]) -> float:
    """Largest |difference| of any parameter's gradients over the largest |gradient| of any parameter (some,
    PointNet's pre-norm biases, have a zero gradient up to rounding, so they are not compared on their own)."""
    pairs = [(a, b) for a, b in zip(ours, reference) if b is not None]
    return max((a - b).abs().max().item() for a, b in pairs) / max(b.abs().max().item() for _, b in pairs)


def compare_networks(baseline: nn.Module, ours: nn.Module, cloud: PointCloud, rounds: int,
                     device: torch.device) -> dict:
    """`compare` of two networks' forward + backward, with their embeddings' and gradients' differences."""
    result = compare({"baseline": lambda: network_step(baseline, cloud),
                      "ours": lambda: network_step(ours, cloud)}, rounds, device)
    (embedding, grads), (ref_embedding, ref_grads) = result.pop("first").values()
    return result | {"max_abs_embedding_diff": (embedding - ref_embedding).abs().max().item(),
                     "max_rel_grad_diff": relative_grad_diff(grads, ref_grads)}


def measure(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cloud = crops(args.crops, args.points, device)
    results = {"device": str(device), "threads": args.threads, "crops": args.crops, "points": args.points,
               "valid_points": int(cloud.num_points.sum())}
    for name in args.backbones:
        torch.manual_seed(0)
        net = BACKBONES[name]().to(device).train()
        unfused = with_unfused_edge_convs(net)
        results[name] = compare_networks(with_autograd_norms(unfused), unfused, cloud, args.rounds, device)
        if name == "dgcnn":
            results["dgcnn_fused"] = compare_networks(unfused, net, cloud, args.rounds, device)
    cfg = DGCNNConfig()
    valid = cloud.valid
    edges = torch.randn(args.crops, args.points, cfg.k, max(cfg.edge_widths), device=device, requires_grad=True)
    grad = torch.randn_like(edges)
    norms = {"baseline": AutogradMaskedBatchNorm(edges.shape[-1]).to(device),
             "ours": MaskedBatchNorm(edges.shape[-1]).to(device)}
    results["norm"] = compare({key: lambda norm=norm: norm_step(norm, edges, valid[:, :, None], grad)
                               for key, norm in norms.items()}, args.rounds, device)
    results["norm"].pop("first")
    results["norm"]["shape"] = list(edges.shape)
    features = torch.randn(args.crops, args.points, 64, device=device)
    results["knn"] = compare({"baseline": lambda: previous_knn(features, valid, cfg.k),
                              "ours": lambda: knn(features, valid, cfg.k)}, args.rounds, device)
    first = results["knn"].pop("first")
    results["knn"]["same_indices"] = bool(torch.equal(first["baseline"], first["ours"]))
    return results


def show(results: dict) -> None:
    print(f"{results['crops']} crops x {results['points']} points ({results['valid_points']} valid),"
          f" {results['device']}, {results['threads']} thread(s); best-of-rounds ms")
    for name in BACKBONES:
        if name in results:
            r = results[name]
            print(f"  {name} forward + backward: autograd norm {r['baseline_ms']:.1f}, analytic {r['ours_ms']:.1f},"
                  f" x{r['speedup']}; max |diff| embedding {r['max_abs_embedding_diff']:.1e},"
                  f" gradients (relative) {r['max_rel_grad_diff']:.1e}")
    if "dgcnn_fused" in results:
        r = results["dgcnn_fused"]
        print(f"  dgcnn forward + backward: unfused EdgeConv {r['baseline_ms']:.1f}, fused {r['ours_ms']:.1f},"
              f" x{r['speedup']}; max |diff| embedding {r['max_abs_embedding_diff']:.1e},"
              f" gradients (relative) {r['max_rel_grad_diff']:.1e}")
    r = results["norm"]
    print(f"  norm alone on {tuple(r['shape'])}: autograd {r['baseline_ms']:.1f}, analytic {r['ours_ms']:.1f},"
          f" x{r['speedup']}")
    r = results["knn"]
    print(f"  knn (64 features): previous keys {r['baseline_ms']:.1f}, now {r['ours_ms']:.1f}, x{r['speedup']},"
          f" same indices: {r['same_indices']}")


main = benchmark_main(parse_args, measure, show)


if __name__ == "__main__":
    sys.exit(main())
