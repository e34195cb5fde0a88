"""The part-segmentation model: the official structure, block features, interpolation, and padding."""

from __future__ import annotations

import pytest
import torch

from launch.evaluation.encoders import random_encoder
from launch.evaluation.segmentation import PartSegmenter, default_blocks, interpolate, split_first_linear
from model.config import load_model_config
from model.features import InputSpec
from model.patchify import patchify
from tests.conftest import ROOT

SPEC = InputSpec(num_points=256, subsample="random", num_patches=16, patch_size=16)


@pytest.fixture
def tiny():
    cfg = load_model_config(ROOT / "configs/model/tiny.yaml")
    return cfg, random_encoder(cfg, 0)


def test_default_blocks_are_the_official_thirds():
    assert default_blocks(12) == (4, 8, 12)  # the official extract_hidden_layers [3, 7, 11], 0-based
    assert default_blocks(4) == (1, 3, 4)
    assert default_blocks(1) == (1,)


def test_block_outputs_are_the_raw_residual_stream_and_the_last_one_normed_is_the_output(tiny):
    _, encoder = tiny
    points = torch.randn(2, 256, 3, generator=torch.Generator().manual_seed(0))
    patches = patchify(points, torch.tensor([256, 256]), 16, 16, generator=torch.Generator().manual_seed(1))
    final, (first, last) = encoder.forward_with_blocks(patches, (1, 4))
    torch.testing.assert_close(final, encoder(patches))
    torch.testing.assert_close(encoder.norm(last), final)
    assert not torch.allclose(first, last)
    with pytest.raises(ValueError, match="1..4"):
        encoder.forward_with_blocks(patches, (5,))


def test_interpolation_reproduces_features_at_the_centres_and_weights_by_inverse_squared_distance():
    centers = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [0, 2, 0], [5, 5, 5]]])
    feats = torch.tensor([[[1.0], [2.0], [4.0], [100.0]]])
    at = interpolate(centers[:, :3], centers, feats)
    torch.testing.assert_close(at, feats[:, :3])
    # (0.5, 0, 0): squared distances 0.25, 0.25, 4.25 to the three nearest; the far one is ignored
    mid = interpolate(torch.tensor([[[0.5, 0, 0]]]), centers, feats)
    w = torch.tensor([1 / 0.25, 1 / 0.25, 1 / 4.25])
    torch.testing.assert_close(mid[0, 0, 0], (w * torch.tensor([1.0, 2.0, 4.0])).sum() / w.sum())


def test_the_head_has_the_official_widths(tiny):
    cfg, encoder = tiny
    model = PartSegmenter(encoder, num_categories=3, num_parts=7, spec=SPEC)
    d, blocks = encoder.dim, len(default_blocks(4))
    linears = [m for m in model.head if isinstance(m, torch.nn.Linear)]
    # [upsampled 384, label 64, CLS d, mean and max of the concatenated block features 2 * 3d] -> 512 -> 256 -> parts
    assert [(m.in_features, m.out_features) for m in linears] == [(384 + 64 + d + 2 * blocks * d, 512), (512, 256),
                                                                  (256, 7)]
    assert [m.bias is not None for m in linears] == [False, False, True]
    up = [m for m in model.upsample if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in up] == [(3 + blocks * d, 384), (384, 384)]


def test_padded_points_score_zero_and_do_not_change_the_valid_points(tiny):
    _, encoder = tiny
    model = PartSegmenter(encoder, num_categories=2, num_parts=5, spec=SPEC).eval()
    gen = torch.Generator().manual_seed(0)
    points = torch.randn(2, 256, 3, generator=gen)
    counts = torch.tensor([256, 200])
    points[1, 200:] = 0.0
    logits = model(points, counts, torch.tensor([0, 1]), torch.Generator().manual_seed(3))
    assert logits.shape == (2, 256, 5)
    assert torch.all(logits[1, 200:] == 0) and torch.all(logits[1, :200].abs().sum(-1) > 0)
    moved = points.clone()
    moved[1, 200:] = 7.0  # garbage in the padding
    again = model(moved, counts, torch.tensor([0, 1]), torch.Generator().manual_seed(3))
    torch.testing.assert_close(again[:, :200], logits[:, :200])


def test_the_category_embedding_changes_the_prediction(tiny):
    _, encoder = tiny
    model = PartSegmenter(encoder, num_categories=2, num_parts=5, spec=SPEC).eval()
    points = torch.randn(1, 256, 3, generator=torch.Generator().manual_seed(0))
    a = model(points, torch.tensor([256]), torch.tensor([0]), torch.Generator().manual_seed(3))
    b = model(points, torch.tensor([256]), torch.tensor([1]), torch.Generator().manual_seed(3))
    assert not torch.allclose(a, b)


def test_an_encoder_without_cls_is_refused(tiny):
    cfg, _ = tiny
    no_cls = cfg.model_copy(update={"encoder": cfg.encoder.model_copy(update={"cls_token": False})})
    with pytest.raises(ValueError, match="CLS"):
        PartSegmenter(random_encoder(no_cls, 0), 2, 5, SPEC)


@pytest.mark.cuda
def test_on_cuda_bf16_logits_follow_fp32_and_a_training_step_is_finite(tiny):
    _, encoder = tiny
    model = PartSegmenter(encoder, num_categories=2, num_parts=5, spec=SPEC).cuda().eval()
    points = torch.randn(4, 256, 3, generator=torch.Generator().manual_seed(0)).cuda()
    counts, categories = torch.tensor([256, 256, 200, 180]).cuda(), torch.tensor([0, 1, 0, 1]).cuda()
    reference = model(points, counts, categories, torch.Generator("cuda").manual_seed(3))
    with torch.autocast("cuda", dtype=torch.bfloat16):
        logits = model(points, counts, categories, torch.Generator("cuda").manual_seed(3))
    valid = torch.arange(256, device="cuda") < counts[:, None]
    error = (logits.float() - reference)[valid].abs().max() / reference[valid].abs().max()
    agree = (logits.float().argmax(-1) == reference.argmax(-1))[valid].float().mean()
    assert logits.dtype == torch.bfloat16 and error < 0.05 and agree > 0.9
    model.train()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = model(points, counts, categories, torch.Generator("cuda").manual_seed(3)).float().square().mean()
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_the_split_first_linear_equals_the_concatenated_one(tiny):
    _, encoder = tiny
    model = PartSegmenter(encoder, num_categories=2, num_parts=5, spec=SPEC)
    gen = torch.Generator().manual_seed(0)
    local, glob = torch.randn(7, 384, generator=gen), torch.randn(3, model.head[0].in_features - 384, generator=gen)
    shape_of_point = torch.tensor([0, 0, 1, 2, 2, 2, 1])
    torch.testing.assert_close(split_first_linear(model.head, local, glob, shape_of_point),
                               model.head[0](torch.cat([local, glob[shape_of_point]], dim=-1)))
