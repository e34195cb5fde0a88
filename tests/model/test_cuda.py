"""What can differ on a GPU: patchify indices, the model's randomness, pinned copies, the attention kernel,
mixed-precision steps and compiled regions. Every test needs CUDA (skipped without it).

Imports stay within torch, numpy, pyyaml, pydantic and numba (and the project), so the tests run on a
bare GPU machine. The slow tests (compilation) come last.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.profiler import ProfilerActivity, profile

from launch.training.precision import autocast_dtype
from model.asymdsd import AsymDSD
from model.batch import MultiCropBatch
from model.config import load_model_config
from model.layers import CrossAttention, SelfAttention
from model.masking import mask_counts
from model.patchify import farthest_point_sample, knn_group
from model.schedules import DistillSchedule
from pipeline.config import MultiCropConfig
from pipeline.crops import Crops, multi_crop
from pipeline.patchify import patch_indices_from
from tests.conftest import ROOT
from tests.model.conftest import tiny_batch

pytestmark = pytest.mark.cuda

CUDA = torch.device("cuda")
SCHEDULE = DistillSchedule(0.04, 0.05, 0.99)
# Loss terms under autocast against fp32, relative. On CPU the largest differences seen for `tiny` were
# 4e-4 (bf16) and 6e-5 (fp16) for cls / patch / total, and 6% / 0.3% for KoLeo, a log of nearest-neighbour
# distances that rounding moves most.
MIXED_TOLERANCE = {"bf16": (1e-2, 0.2), "fp16": (5e-3, 0.05)}  # (terms, koleo)


@pytest.fixture
def no_tf32():
    """fp32 references are true fp32 (TF32 matmuls would dominate every comparison)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def loader_crops(shapes: int) -> tuple[list[Crops], list[Crops]]:
    """The loader's own global and local crops (S sizes: 2 x 1024 and 4 x 256 points, some padded) of
    `shapes` 16,384-point clouds."""
    rng = np.random.default_rng(0)
    crops = [multi_crop((rng.standard_normal((16384, 3)) * [2.0, 1.0, 0.5]).astype(np.float32), MultiCropConfig(), rng)
             for _ in range(shapes)]
    return [g for g, _ in crops], [loc for _, loc in crops]


@pytest.mark.parametrize("kind, patches", [(0, 64), (1, 16)])
def test_patchify_indices_on_cuda_equal_the_loader_and_cpu(kind, patches):
    """CUDA FPS and kNN on the loader's crops pick exactly the loader's indices and the CPU model's groups.

    These crops hold no exactly tied distances (ties may be ordered differently by `topk`, harmlessly: the
    tokenizer max-pools a group), so any difference is a distance computed differently on the GPU; the
    message says whether only the order within groups differs or the neighbours themselves."""
    crops = loader_crops(16)[kind]
    pts = torch.from_numpy(np.concatenate([c.points for c in crops]))
    num = torch.from_numpy(np.concatenate([c.num_points for c in crops]))
    centers = farthest_point_sample(pts.to(CUDA), num.to(CUDA), patches, torch.Generator(CUDA).manual_seed(3))
    groups = knn_group(pts.to(CUDA), num.to(CUDA), centers, 32).cpu()
    centers = centers.cpu()
    loader_centers, loader_groups = patch_indices_from(pts.numpy(), num.numpy(), patches, 32, centers[:, 0].numpy())
    differ = [c for c in range(len(pts)) if not np.array_equal(loader_centers[c], centers[c].numpy())]
    assert not differ, f"FPS centres differ from the loader's on crops {differ} of {len(pts)}"
    differ = [c for c in range(len(pts)) if not np.array_equal(loader_groups[c], groups[c].numpy())]
    other_points = [c for c in differ if not np.array_equal(np.sort(loader_groups[c], -1), groups[c].sort(-1)[0])]
    assert not differ, (f"kNN groups differ from the loader's on crops {differ} of {len(pts)}, with other "
                        f"neighbours (not only another order) on {other_points}")
    assert torch.equal(groups, knn_group(pts, num, centers, 32))


def test_views_depend_only_on_the_cuda_generator_seed(tiny_model_config, torch_rng):
    """FPS starts and masks drawn on the GPU: the trainer's reseeding makes them reproducible."""
    model = AsymDSD(tiny_model_config).to(CUDA)
    batch = tiny_batch(8, torch_rng).to(CUDA)
    a, b, c = (model.prepare(batch, torch.Generator(CUDA).manual_seed(seed)) for seed in (3, 3, 4))
    for name in ("visible_idx", "masked_idx"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert torch.equal(a.global_patches.center_idx, b.global_patches.center_idx)
    assert torch.equal(a.local_patches.patch_idx, b.local_patches.patch_idx)
    assert not torch.equal(a.global_patches.center_idx, c.global_patches.center_idx)


def pinned(batch: MultiCropBatch) -> MultiCropBatch:
    return batch.map(torch.Tensor.pin_memory)


def test_pinned_batch_moves_non_blocking_and_gives_the_same_losses(tiny_model_config, torch_rng):
    torch.manual_seed(0)
    model = AsymDSD(tiny_model_config).to(CUDA)
    batch = tiny_batch(8, torch_rng)
    source = pinned(batch)
    assert source.global_crops.points.is_pinned() and source.local_crops.num_points.is_pinned()
    moved = source.to(CUDA, non_blocking=True)
    reference = batch.to(CUDA)
    for got, want in ((moved.global_crops, reference.global_crops), (moved.local_crops, reference.local_crops)):
        assert torch.equal(got.points, want.points) and torch.equal(got.num_points, want.num_points)
    out = [model.losses(b, SCHEDULE, generator=torch.Generator(CUDA).manual_seed(1)).total for b in (moved, reference)]
    torch.testing.assert_close(out[0], out[1], rtol=1e-6, atol=0)


def attention_inputs(config: str) -> tuple[SelfAttention, CrossAttention, tuple[torch.Tensor, ...]]:
    """The encoder's and predictor's attention of `config` with inputs of the model's token counts."""
    cfg = load_model_config(ROOT / f"configs/model/{config}.yaml")
    counts = mask_counts(cfg.patchify.global_patches, cfg.masking)
    make = torch.Generator(CUDA).manual_seed(0)
    tokens = torch.randn(32, 1 + cfg.patchify.global_patches, cfg.encoder.dim, device=CUDA, generator=make)
    queries = torch.randn(32, counts.num_masked, cfg.predictor.dim, device=CUDA, generator=make)
    memory = torch.randn(32, 1 + counts.num_visible, cfg.predictor.dim, device=CUDA, generator=make)
    self_attn = SelfAttention(cfg.encoder.dim, cfg.encoder.num_heads).to(CUDA)
    cross = CrossAttention(cfg.predictor.dim, cfg.predictor.num_heads).to(CUDA)
    return self_attn, cross, (tokens.requires_grad_(), queries.requires_grad_(), memory.requires_grad_())


def sdpa_ops(self_attn: SelfAttention, cross: CrossAttention, inputs: tuple[torch.Tensor, ...]) -> set[str]:
    """Forward and backward under bf16 autocast (fp32 inputs, as in training); the SDPA ops that ran."""
    tokens, queries, memory = inputs
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = self_attn(tokens).float().square().mean() + cross(queries, memory).float().square().mean()
        loss.backward()
        torch.cuda.synchronize()
    assert all(torch.isfinite(t.grad).all() for t in inputs)
    return {e.name for e in prof.events() if "scaled_dot_product" in e.name}


@pytest.mark.parametrize("config", ["asymdsd_s", "asymdsd_b"])
def test_attention_runs_the_flash_kernel_in_bf16(config):
    """Forced to flash attention, the model's attention runs (forward and backward) at S and B sizes;
    left to choose, SDPA picks a fused kernel, never the math fallback."""
    self_attn, cross, inputs = attention_inputs(config)
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        forced = sdpa_ops(self_attn, cross, inputs)
    assert any("flash" in name for name in forced), forced
    chosen = sdpa_ops(self_attn, cross, inputs)
    assert not any("math" in name for name in chosen), chosen
    assert any(kind in name for name in chosen for kind in ("flash", "cudnn", "efficient")), chosen


def loss_terms(model: AsymDSD, batch: MultiCropBatch, precision: str):
    """The step's losses with the forwards under autocast to `precision`, as the trainer sets it."""
    model.set_autocast(autocast_dtype(precision))
    return model.losses(batch, SCHEDULE, generator=torch.Generator(CUDA).manual_seed(1))


def as_floats(out) -> dict[str, float]:
    return {"total": out.total.item(), **{k: v.item() for k, v in out.terms.items()}}


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_steps_are_close_to_fp32_and_keep_fp32_weights(tiny_model_config, torch_rng, no_tf32, precision):
    """Autocast losses are finite and near fp32's; after optimizer steps student and EMA teacher are still
    fp32 and finite, and the teacher has moved. fp16 is loss-scaled from 2^16: the first steps overflow in
    the fp16 bias gradients (sums over every row) and are skipped while the scale halves (on CPU, `tiny`
    needed 6), so the loop runs until two steps were applied."""
    torch.manual_seed(0)
    model = AsymDSD(tiny_model_config).to(CUDA)
    batch = tiny_batch(16, torch_rng).to(CUDA)
    reference = as_floats(loss_terms(model, batch, "fp32"))
    got = as_floats(loss_terms(model, batch, precision))
    terms_tol, koleo_tol = MIXED_TOLERANCE[precision]
    for name, value in reference.items():
        assert math.isfinite(got[name]), (name, got)
        tol = koleo_tol if name == "koleo" else terms_tol
        assert abs(got[name] - value) <= tol * abs(value), (name, got[name], value)

    teacher_before = [p.detach().clone() for p in model.teacher.parameters()]
    optimizer = torch.optim.AdamW(model.student.parameters(), lr=1e-3, fused=True)
    scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")
    applied = []
    while sum(applied) < 2 and len(applied) < 16:
        out = loss_terms(model, batch, precision)
        assert torch.isfinite(out.total)
        scaler.scale(out.total).backward()
        scale = scaler.get_scale()
        scaler.step(optimizer)
        scaler.update()
        applied.append(scaler.get_scale() >= scale)  # the scale drops only after a skipped step
        optimizer.zero_grad(set_to_none=True)
        model.end_step(SCHEDULE.momentum, applied[-1])
    assert sum(applied) == 2, f"{len(applied)} steps, applied: {applied}, loss scale now {scaler.get_scale()}"
    if precision == "bf16":
        assert all(applied)
    for module in (model.student, model.teacher):
        for name, p in module.named_parameters():
            assert p.dtype == torch.float32 and torch.isfinite(p).all(), name
    assert any(not torch.equal(a, b) for a, b in zip(teacher_before, model.teacher.parameters()))


def step_outputs(model: AsymDSD, batch: MultiCropBatch, precision: str) -> tuple[dict[str, float], torch.Tensor]:
    """Loss terms and the flattened student gradient of one forward/backward."""
    out = loss_terms(model, batch, precision)
    out.total.backward()
    grads = torch.cat([p.grad.flatten() for p in model.student.parameters() if p.grad is not None])
    return as_floats(out), grads


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_compiled_regions_equal_eager_on_cuda(tiny_model_config, torch_rng, no_tf32, precision):
    """Triton kernels against eager CUDA, same weights and randomness. fp32: terms within 1e-4 relative and
    every gradient within 1e-4 of the largest; bf16: terms within 1e-2 (KoLeo 0.2), gradients with cosine
    similarity above 0.99 (both sides round to bf16 at different places)."""
    torch.manual_seed(0)
    eager = AsymDSD(tiny_model_config)
    compiled = AsymDSD(tiny_model_config)
    compiled.student.load_state_dict(eager.student.state_dict())
    compiled.teacher.load_state_dict(eager.teacher.state_dict())
    eager.to(CUDA)
    compiled.to(CUDA)
    compiled.compile()
    batch = tiny_batch(16, torch_rng).to(CUDA)
    want_terms, want_grads = step_outputs(eager, batch, precision)
    got_terms, got_grads = step_outputs(compiled, batch, precision)
    terms_tol, koleo_tol = (1e-4, 1e-4) if precision == "fp32" else (1e-2, 0.2)
    for name, value in want_terms.items():
        tol = koleo_tol if name == "koleo" else terms_tol
        assert abs(got_terms[name] - value) <= tol * max(abs(value), 1e-3), (name, got_terms[name], value)
    if precision == "fp32":
        assert (got_grads - want_grads).abs().max() <= 1e-4 * want_grads.abs().max()
    else:
        assert torch.nn.functional.cosine_similarity(got_grads, want_grads, dim=0) > 0.99
