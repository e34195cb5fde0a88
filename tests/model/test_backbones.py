"""The point backbones: masked batch norm, published parameter counts, padding and order invariance,
DGCNN's k-NN graph, split and fused EdgeConv, the factory, gradient flow."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from bench.point_backbones import AutogradMaskedBatchNorm, UnfusedEdgeConv
from model.backbone import PointBackbone, PointCloud
from model.backbones import build_backbone
from model.config import DGCNNConfig, ModelConfig, PointNetConfig
from model.dgcnn import DGCNN, EdgeConv, EdgeNormActMax, knn
from model.point_layers import MaskedBatchNorm, masked_batch_norm
from model.pointnet import PointNet

# Embeddings agree to 1e-5, relative above 1: train-mode statistics summed in another order differ by
# float32 rounding, which five batch norms carry into features of size ~5.
TOL = {"atol": 1e-5, "rtol": 1e-5}
BUILDERS = {"pointnet": lambda: PointNet(PointNetConfig()), "dgcnn": lambda: DGCNN(DGCNNConfig())}


def randomised_bn(dim: int, torch_rng: torch.Generator) -> tuple[MaskedBatchNorm, nn.BatchNorm1d]:
    """A masked and a torch batch norm with the same random affine parameters."""
    ours, ref = MaskedBatchNorm(dim), nn.BatchNorm1d(dim)
    weight, bias = torch.randn(dim, generator=torch_rng), torch.randn(dim, generator=torch_rng)
    with torch.no_grad():
        for bn in (ours, ref):
            bn.weight.copy_(weight)
            bn.bias.copy_(bias)
    return ours, ref


def assert_same_state(ours: MaskedBatchNorm, ref: nn.BatchNorm1d) -> None:
    torch.testing.assert_close(ours.running_mean, ref.running_mean, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(ours.running_var, ref.running_var, atol=1e-6, rtol=1e-6)
    assert ours.num_batches_tracked.item() == ref.num_batches_tracked.item()


def test_masked_batch_norm_with_every_row_valid_is_torch_batch_norm(torch_rng):
    ours, ref = randomised_bn(8, torch_rng)
    assert [(n, p.shape) for n, p in ours.named_parameters()] == [(n, p.shape) for n, p in ref.named_parameters()]
    assert [(n, b.shape) for n, b in ours.named_buffers()] == [(n, b.shape) for n, b in ref.named_buffers()]
    valid = torch.ones(6, 10, dtype=torch.bool)
    for _ in range(3):
        x = torch.randn(6, 10, 8, generator=torch_rng) * 3 + 2
        torch.testing.assert_close(ours(x, valid), ref(x.view(-1, 8)).view_as(x), atol=1e-5, rtol=1e-5)
        assert_same_state(ours, ref)
    ours.eval(), ref.eval()
    x = torch.randn(6, 10, 8, generator=torch_rng)
    torch.testing.assert_close(ours(x, valid), ref(x.view(-1, 8)).view_as(x), atol=1e-5, rtol=1e-5)


def test_masked_batch_norm_statistics_ignore_invalid_rows(torch_rng):
    """Valid rows are normalised by their own statistics whatever the invalid rows hold."""
    ours, ref = randomised_bn(8, torch_rng)
    x = torch.randn(4, 12, 8, generator=torch_rng) + 1
    valid = torch.arange(12) < torch.tensor([12, 5, 9, 2])[:, None]
    expected = ref(x[valid])
    for garbage in (1e3, float("inf"), float("nan")):
        bn = copy.deepcopy(ours)
        out = bn(torch.where(valid[..., None], x, garbage), valid)
        torch.testing.assert_close(out[valid], expected, atol=1e-5, rtol=1e-5)
        assert_same_state(bn, ref)


def test_masked_batch_norm_broadcasts_the_mask_over_trailing_rows(torch_rng):
    """A (C, N, 1) mask over (C, N, k, F) edges counts every edge of a valid point."""
    ours, ref = randomised_bn(4, torch_rng)
    x = torch.randn(3, 7, 5, 4, generator=torch_rng)
    valid = torch.arange(7) < torch.tensor([7, 3, 1])[:, None]
    out = ours(x, valid[:, :, None])
    torch.testing.assert_close(out[valid], ref(x[valid].reshape(-1, 4)).view(-1, 5, 4), atol=1e-5, rtol=1e-5)
    assert_same_state(ours, ref)


def dgcnn_edges(torch_rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(C, N, k, F) edges with their (C, N, 1) mask, as EdgeConv normalises them: a full crop, a partial
    one, one with a single valid point and one with none."""
    x = torch.randn(4, 64, 20, 32, generator=torch_rng) * 2 + 1
    valid = torch.arange(64) < torch.tensor([64, 40, 1, 0])[:, None]
    return x, valid[:, :, None]


def test_masked_batch_norm_gradcheck(torch_rng):
    """float64 finite differences in input, weight and bias of the valid rows' outputs (the gradient the
    statistics pass back comes from valid rows only), and in weight and bias of every row's output; a
    per-row mask and one broadcast over the edges of a point."""
    cases = [((3, 7, 3), torch.arange(7) < torch.tensor([7, 2, 5])[:, None]),
             ((3, 7, 4, 3), (torch.arange(7) < torch.tensor([7, 4, 0])[:, None])[:, :, None])]
    for shape, valid in cases:
        x = (torch.randn(shape, generator=torch_rng, dtype=torch.float64) * 2 + 1).requires_grad_()
        weight, bias = (torch.randn(shape[-1], generator=torch_rng, dtype=torch.float64).requires_grad_()
                        for _ in range(2))
        rows = valid.expand(shape[:-1])[..., None]

        def valid_rows(x, weight, bias, valid=valid, rows=rows):
            return torch.where(rows, masked_batch_norm(x, valid, weight, bias, 1e-5)[0], 0)

        def every_row(weight, bias, x=x.detach(), valid=valid):
            return masked_batch_norm(x, valid, weight, bias, 1e-5)[0]

        assert torch.autograd.gradcheck(valid_rows, (x, weight, bias))
        assert torch.autograd.gradcheck(every_row, (weight, bias))


def test_masked_batch_norm_equals_autograd_on_dgcnn_edges(torch_rng):
    """Outputs, running statistics and input, weight and bias gradients of the analytic backward equal
    autograd's through the straightforward formulation. The loss weighs valid rows only, as in the networks,
    whose padded rows are filled in after the last layer."""
    ours, _ = randomised_bn(32, torch_rng)
    ref = AutogradMaskedBatchNorm(32)
    ref.load_state_dict(ours.state_dict())
    x, valid = dgcnn_edges(torch_rng)
    dy = torch.randn(x.shape, generator=torch_rng) * valid[..., None]
    results = []
    for bn in (ours, ref):
        inputs = x.clone().requires_grad_()
        out = bn(inputs, valid)
        out.backward(dy)
        results.append((out, inputs.grad, bn.weight.grad, bn.bias.grad, bn.running_mean, bn.running_var))
    for name, a, b in zip(("out", "x.grad", "weight.grad", "bias.grad", "mean", "var"), *results):
        torch.testing.assert_close(a, b, **TOL, msg=name)


def test_masked_batch_norm_valid_gradients_ignore_invalid_rows(torch_rng):
    """Whatever invalid rows hold, and whatever gradient their outputs get, valid rows' gradients are those
    of a loss on valid rows only; finite invalid rows get dy * weight / std."""
    bn, _ = randomised_bn(32, torch_rng)
    x, valid = dgcnn_edges(torch_rng)
    rows = valid.expand(x.shape[:-1])
    dy = torch.randn(x.shape, generator=torch_rng)
    clean = x.clone().requires_grad_()
    copy.deepcopy(bn)(clean, valid).backward(dy * valid[..., None])
    scale = bn.weight.detach() * torch.rsqrt(x[rows].var(0, unbiased=False) + bn.eps)
    for garbage in (1e3, float("inf"), float("nan")):
        inputs = torch.where(rows[..., None], x, garbage).requires_grad_()
        copy.deepcopy(bn)(inputs, valid).backward(dy)
        torch.testing.assert_close(inputs.grad[rows], clean.grad[rows], **TOL)
        if garbage == 1e3:
            torch.testing.assert_close(inputs.grad[~rows], dy[~rows] * scale, **TOL)


@pytest.mark.parametrize("edges", [False, True])
def test_masked_batch_norm_keeps_the_input_dtype_with_float32_statistics(edges, torch_rng):
    ours, _ = randomised_bn(32, torch_rng)
    half = copy.deepcopy(ours)
    x, valid = dgcnn_edges(torch_rng)
    if not edges:  # one row per mask entry
        x, valid = x[:, :, 0], valid[:, :, 0]
    x = x.bfloat16().requires_grad_()
    out = half(x, valid)
    out.float().sum().backward()
    assert out.dtype == x.grad.dtype == torch.bfloat16 and half.running_var.dtype == torch.float32
    torch.testing.assert_close(out.float(), ours(x.detach().float(), valid), atol=0.05, rtol=0.02)
    torch.testing.assert_close(half.running_var, ours.running_var)


def test_parameter_counts_are_the_published_feature_extractors():
    pointnet = [3, 64, 64, 64, 128, 1024]
    expected = sum(i * o + o + 2 * o for i, o in zip(pointnet[:-1], pointnet[1:]))
    assert sum(p.numel() for p in PointNet(PointNetConfig()).parameters()) == expected == 151_680
    edges = [3, 64, 64, 128, 256]
    expected = sum(2 * i * o + 2 * o for i, o in zip(edges[:-1], edges[1:])) + 512 * 1024 + 2 * 1024
    assert sum(p.numel() for p in DGCNN(DGCNNConfig()).parameters()) == expected == 617_856


def clouds(counts: list[int], length: int, torch_rng: torch.Generator, garbage: float = 0.0) -> PointCloud:
    """Crops of the given valid counts, padded to `length` with `garbage` times noise. A crop's valid points
    depend on its count only, so the same crop can be built alone or in a batch, padded or not."""
    points = torch.stack([torch.cat([torch.rand(n, 3, generator=torch.Generator().manual_seed(n)) * 2 - 1,
                                     torch.randn(length - n, 3, generator=torch_rng) * garbage]) for n in counts])
    return PointCloud(points, torch.tensor(counts))


def warmed(name: str, torch_rng: torch.Generator) -> PointBackbone:
    """A network whose running statistics and affine parameters are not the initial ones."""
    torch.manual_seed(0)
    net = BUILDERS[name]()
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, MaskedBatchNorm):
                module.weight.normal_(1, 0.3)
                module.bias.normal_(0, 0.3)
        net(clouds([90, 150], 150, torch_rng))
    return net


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_eval_embedding_of_a_crop_is_independent_of_its_padding(name, torch_rng):
    net = warmed(name, torch_rng).eval()
    counts = [150, 97, 12]  # DGCNN's k = 20 exceeds the last crop's points
    with torch.no_grad():
        padded = net.embedding(net(clouds(counts, 200, torch_rng, garbage=10.0)))
        for i, n in enumerate(counts):
            alone = net.embedding(net(clouds([n], n, torch_rng)))
            torch.testing.assert_close(padded[i:i + 1], alone, **TOL)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_train_embeddings_and_statistics_are_independent_of_the_padding(name, torch_rng):
    """Train-mode statistics depend on the batch, not on how far it is padded."""
    net = warmed(name, torch_rng).train()
    other = copy.deepcopy(net)
    counts = [150, 97, 12]
    with torch.no_grad():
        tight = net.embedding(net(clouds(counts, 150, torch_rng)))
        loose = other.embedding(other(clouds(counts, 200, torch_rng, garbage=10.0)))
    torch.testing.assert_close(tight, loose, **TOL)
    for (key, a), b in zip(net.state_dict().items(), other.state_dict().values()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5, msg=key)


def permuted(cloud: PointCloud, torch_rng: torch.Generator) -> PointCloud:
    """Each crop's valid points shuffled among themselves, the padding left in place."""
    points = cloud.points.clone()
    for i, n in enumerate(cloud.num_points.tolist()):
        points[i, :n] = points[i, torch.randperm(n, generator=torch_rng)]
    return PointCloud(points, cloud.num_points)


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_embedding_is_independent_of_the_point_order(name, train, torch_rng):
    net = warmed(name, torch_rng).train(train)
    cloud = clouds([128, 64, 100], 128, torch_rng)
    with torch.no_grad():
        a = net.embedding(net(cloud))
        b = net.embedding(net(permuted(cloud, torch_rng)))
    assert a.shape == (3, net.embedding_dim)
    torch.testing.assert_close(a, b, **TOL)


def test_knn_ranks_by_distance_with_ties_to_the_lower_index_and_never_picks_padding():
    x = torch.tensor([[[0.0], [1.0], [-1.0], [2.0], [-2.0], [0.0], [0.5], [9.0]]])
    valid = torch.arange(8) < 5
    idx = knn(x, valid[None], 7)
    assert idx[0, 0].tolist() == [0, 1, 2, 3, 4, 0, 0]  # 5 valid points: slots 5, 6 repeat the nearest
    assert idx[0, 3].tolist() == [3, 1, 0, 2, 4, 3, 3]
    assert idx[0, 4].tolist() == [4, 2, 0, 1, 3, 4, 4]
    assert knn(x, valid[None], 3)[0, 1].tolist() == [1, 0, 3]  # 0 and 3 are both at distance 1


def test_knn_ignores_whatever_the_padding_holds(torch_rng):
    x = torch.randn(2, 30, 4, generator=torch_rng)
    valid = torch.arange(30) < torch.tensor([30, 12])[:, None]
    expected = knn(x, valid, 8)
    for garbage in (1e30, float("-inf"), float("nan")):
        idx = knn(torch.where(valid[..., None], x, garbage), valid, 8)
        assert torch.equal(idx[valid], expected[valid]) and valid.gather(1, idx.view(2, -1)).all()


@pytest.mark.parametrize("train", [False, True])
def test_split_edge_conv_equals_the_linear_on_every_edge(train, torch_rng):
    torch.manual_seed(0)
    conv = EdgeConv(6, 16, k=5, negative_slope=0.2).train(train)
    with torch.no_grad():
        conv.norm.running_mean.normal_()
        conv.norm.running_var.uniform_(0.5, 2)
    direct = copy.deepcopy(conv)
    x = torch.randn(3, 40, 6, generator=torch_rng)
    valid = torch.arange(40) < torch.tensor([40, 23, 4])[:, None]
    idx = knn(x, valid, 5)
    neighbours = torch.stack([x[i, idx[i]] for i in range(3)])  # (C, N, k, F)
    centers = x[:, :, None].expand_as(neighbours)
    edges = direct.linear(torch.cat([neighbours - centers, centers], dim=-1))
    expected = direct.activation(direct.norm(edges, valid[:, :, None])).amax(dim=2)
    torch.testing.assert_close(conv(x, valid), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(conv.norm.running_mean, direct.norm.running_mean, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(conv.norm.running_var, direct.norm.running_var, atol=1e-6, rtol=1e-5)


def randomised_edge_conv(in_dim: int, out_dim: int, k: int, torch_rng: torch.Generator) -> EdgeConv:
    """An EdgeConv whose batch norm has random weights of both signs (a negative one turns the max over
    neighbours into a min), random biases and running statistics."""
    conv = EdgeConv(in_dim, out_dim, k, negative_slope=0.2)
    with torch.no_grad():
        conv.linear.weight.copy_(torch.randn(conv.linear.weight.shape, generator=torch_rng) / in_dim ** 0.5)
        conv.norm.weight.copy_(torch.randn(out_dim, generator=torch_rng))
        conv.norm.bias.copy_(torch.randn(out_dim, generator=torch_rng))
        conv.norm.running_mean.copy_(torch.randn(out_dim, generator=torch_rng))
        conv.norm.running_var.copy_(torch.rand(out_dim, generator=torch_rng) + 0.5)
    assert (conv.norm.weight < 0).any() and (conv.norm.weight > 0).any()
    return conv


@pytest.mark.parametrize("train", [False, True])
def test_fused_edge_conv_equals_the_unfused_one(train, torch_rng):
    """Outputs (padded rows included), gradients of the input and of every parameter, and running statistics
    of the fused EdgeConv equal those of batch norm, LeakyReLU and amax on the (C, N, k, out) edges: a full
    crop, a partial one, one with fewer valid points than k (repeated neighbours) and one with none."""
    conv = randomised_edge_conv(24, 48, 10, torch_rng).train(train)
    unfused = copy.deepcopy(conv)
    unfused.__class__ = UnfusedEdgeConv
    x = torch.randn(4, 60, 24, generator=torch_rng) * 2 + 1
    valid = torch.arange(60) < torch.tensor([60, 37, 6, 0])[:, None]
    dy = torch.randn(4, 60, 48, generator=torch_rng)
    results = []
    for module in (conv, unfused):
        inputs = x.clone().requires_grad_()
        out = module(inputs, valid)
        out.backward(dy)
        grads = [p.grad for p in module.parameters()]
        results.append((out, inputs.grad, *grads, *module.buffers()))
    names = ["out", "x.grad", *(f"{n}.grad" for n, _ in conv.named_parameters()), *dict(conv.named_buffers())]
    assert len(names) == len(results[0]) == 8
    for name, a, b in zip(names, *results):
        torch.testing.assert_close(a, b, **TOL, msg=name)


def test_fused_edge_conv_gradcheck(torch_rng):
    """float64 finite differences of the fused normalise-activate-max in the neighbour and center halves and
    the batch norm's weight and bias: of valid points' outputs with batch statistics (the statistics pass
    back the gradient of valid rows only), and of every output with running statistics. Random features
    leave no ties; the second crop has fewer valid points than k."""
    valid = torch.arange(9) < torch.tensor([9, 3])[:, None]
    idx = knn(torch.randn(2, 9, 2, generator=torch_rng, dtype=torch.float64), valid, 4)
    neighbour, center = (torch.randn(2, 9, 5, generator=torch_rng, dtype=torch.float64).requires_grad_()
                         for _ in range(2))
    weight = torch.tensor([1.5, -0.7, 0.4, -2.0, 1.0], dtype=torch.float64, requires_grad=True)
    bias = torch.randn(5, generator=torch_rng, dtype=torch.float64).requires_grad_()
    running = (torch.randn(5, dtype=torch.float64, generator=torch_rng),
               torch.rand(5, dtype=torch.float64, generator=torch_rng) + 0.5)

    def train(neighbour, center, weight, bias):
        out = EdgeNormActMax.apply(neighbour, center, idx, valid, weight, bias, None, 1e-5, 0.2)[0]
        return torch.where(valid[..., None], out, 0)

    def evaluate(neighbour, center, weight, bias):
        return EdgeNormActMax.apply(neighbour, center, idx, valid, weight, bias, running, 1e-5, 0.2)

    for fn in (train, evaluate):
        assert torch.autograd.gradcheck(fn, (neighbour, center, weight, bias))


@pytest.mark.parametrize("name, cls, dim", [("pointnet", PointNet, 1024), ("dgcnn", DGCNN, 2048)])
def test_build_backbone_builds_the_configured_network(name, cls, dim, torch_rng):
    net = build_backbone(ModelConfig(method="dwc", backbone=name))
    assert isinstance(net, cls) and net.embedding_dim == dim and not net.has_cls
    points = torch.randn(2, 64, 3, generator=torch_rng) * 5 + 3
    cloud = net.prepare(points, torch.tensor([64, 40]))
    tokens = net(cloud)
    assert tokens.shape == (2, 64, net.dim) and net.embedding(tokens).shape == (2, dim)


def pre_norm_bias(name: str) -> bool:
    """PointNet's linear biases, which train-mode batch norm cancels exactly (they get no gradient there)."""
    return name.endswith("linear.bias")


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_gradients_reach_every_parameter(name, train, torch_rng):
    net = warmed(name, torch_rng).train(train)
    embedding = net.embedding(net(clouds([100, 64], 100, torch_rng)))
    (embedding * torch.randn(embedding.shape, generator=torch_rng)).sum().backward()
    for key, param in net.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), key
        if not (train and pre_norm_bias(key)):
            assert param.grad.abs().sum() > 0, key


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_padded_rows_hold_the_valid_mean(name, torch_rng):
    """Pooling over all rows is pooling over the valid points: padded rows hold the valid rows' mean."""
    net = warmed(name, torch_rng).eval()
    cloud = clouds([80, 30], 100, torch_rng, garbage=10.0)
    with torch.no_grad():
        tokens = net(cloud)
    for i, n in enumerate([80, 30]):
        torch.testing.assert_close(tokens[i, n:], tokens[i, :n].mean(0).expand(100 - n, -1))
