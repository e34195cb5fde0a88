"""Tokenizer, encoder structure and the exact reference parameter counts."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from model.asymdsd import Student
from model.config import EncoderConfig, TokenizerConfig, load_model_config
from model.encoder import PointEncoder, PointPatchEmbed
from model.patchify import patchify
from model.summary import parameter_counts
from tests.conftest import ROOT

REFERENCE = {
    "asymdsd_s": {"encoder": 21_786_240, "predictor": 2_804_736, "cls_head": 2_763_008, "patch_head": 2_763_008,
                  "student_total": 30_117_376, "teacher_total": 27_312_256},
    "asymdsd_b": {"encoder": 91_484_928, "predictor": 11_212_800, "cls_head": 3_156_224, "patch_head": 3_156_224},
}


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_parameter_counts_equal_the_reference(name):
    counts = parameter_counts(load_model_config(ROOT / f"configs/model/{name}.yaml"))
    for key, value in REFERENCE[name].items():
        assert counts[key] == value, key


@pytest.mark.parametrize(
    "name, megabytes",
    [("asymdsd_s", 229.7), ("asymsd_cls_s", 196.4), ("asymsd_mpm_s", 207.6), ("asymdsd_b", 827.2)],
)
def test_student_plus_teacher_match_the_released_checkpoint_sizes(name, megabytes):
    """Appendix B: fp32 student + teacher parameters account for each published checkpoint's size."""
    counts = parameter_counts(load_model_config(ROOT / f"configs/model/{name}.yaml"))
    assert round((counts["student_total"] + counts["teacher_total"]) * 4 / 1e6, 1) == megabytes


def test_summary_cli_prints_json():
    out = subprocess.run(
        [sys.executable, "-m", "model.summary", "--config", "configs/model/asymdsd_s.yaml", "--json"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )
    data = json.loads(out.stdout)
    assert data["encoder"] == 21_786_240 and data["predictor"] == 2_804_736
    assert {"cls_head", "patch_head", "student_total", "teacher_total"} <= data.keys()


def test_tokenizer_equals_concatenating_formulation():
    """The split first linear must equal the reference's [point, pooled] concatenation."""
    torch.manual_seed(0)
    embed = PointPatchEmbed(TokenizerConfig(hidden_dims=[[16, 32], [64]], bias=True), dim=48, eps=1e-5)
    x = torch.randn(5, 32, 3)
    s1, s2 = embed.stages
    h = s1(x)
    cat = torch.cat([h, h.amax(-2, keepdim=True).expand_as(h)], dim=-1)
    expected = s2.layers(cat).amax(-2)
    assert torch.allclose(embed._embed(x), expected, atol=1e-5)
    assert embed(x.view(1, 5, 32, 3)).shape == (1, 5, 48)


def test_bias_rules():
    s = PointPatchEmbed(TokenizerConfig(), 384, 1e-5)
    b = PointPatchEmbed(TokenizerConfig(hidden_dims=[[256, 512, 1024], [2048]], bias=True), 768, 1e-5)
    assert all(m.bias is None for m in s.modules() if isinstance(m, torch.nn.Linear))
    assert all(m.bias is not None for m in b.modules() if isinstance(m, torch.nn.Linear))
    enc = PointEncoder(TokenizerConfig(), EncoderConfig(dim=64, depth=2, num_heads=2))
    assert all(m.bias is None for m in enc.blocks.modules() if isinstance(m, torch.nn.Linear))
    assert enc.pos_embed.fc1.bias is not None and enc.pos_embed.fc2.bias is not None


@pytest.mark.parametrize("name", ["asymdsd_s", "asymdsd_b"])
def test_attention_weights_keep_the_reference_init(name):
    """Packed qkv: Xavier-uniform over (3D, D) as nn.MultiheadAttention's in_proj; other linears trunc-normal(0.02)."""
    torch.manual_seed(0)
    student = Student(load_model_config(ROOT / f"configs/model/{name}.yaml"))
    qkv = [blk.attn.qkv.weight for blk in student.encoder.blocks]
    assert len(qkv) == 12
    for w in qkv:
        three_d, d = w.shape
        xavier_std = math.sqrt(2.0 / (three_d + d))  # uniform(-a, a) with a = sqrt(6 / (fan_in + fan_out))
        assert w.std().item() == pytest.approx(xavier_std, rel=0.1)
        assert w.abs().max().item() <= math.sqrt(3) * xavier_std * (1 + 1e-6)
    for w in [blk.attn.proj.weight for blk in student.encoder.blocks] + [blk.mlp.fc1.weight for blk in student.encoder.blocks]:
        assert w.std().item() == pytest.approx(0.02, rel=0.1)
    cross = [blk.attn.in_proj for blk in student.predictor.blocks]
    assert all(w.std().item() == pytest.approx(math.sqrt(2.0 / sum(w.shape)), rel=0.1) for w in cross)


def manual_forward(enc: PointEncoder, tokens: torch.Tensor, pe: torch.Tensor) -> torch.Tensor:
    """The encoder written out: CLS with zero pe, pe added before every block, pre-norm, final norm."""
    c, p, d = tokens.shape
    x = torch.cat([enc.cls_token.expand(c, 1, d), tokens], dim=1)
    pe = torch.cat([torch.zeros(c, 1, d), pe], dim=1)
    for blk in enc.blocks:
        x = x + pe
        h = F.rms_norm(x, (d,), blk.norm1.weight, 1e-5)
        x = x + blk.attn(h)
        h = F.rms_norm(x, (d,), blk.norm2.weight, 1e-5)
        x = x + blk.mlp.fc2(F.gelu(blk.mlp.fc1(h)))
    return F.rms_norm(x, (d,), enc.norm.weight, 1e-5)


def test_encoder_adds_position_before_every_block(torch_rng):
    torch.manual_seed(0)
    enc = PointEncoder(TokenizerConfig(hidden_dims=[[16, 32], [64]]), EncoderConfig(dim=64, depth=3, num_heads=4))
    with torch.no_grad():
        enc.cls_token.normal_()
        for blk in enc.blocks:
            blk.norm1.weight.uniform_(0.5, 1.5)
    pts = torch.randn(3, 256, 3, generator=torch_rng)
    patches = patchify(pts, torch.full((3,), 256), 16, 32, generator=torch_rng)
    tokens, pe = enc.embed(patches)
    out = enc(patches)
    assert out.shape == (3, 17, 64)
    assert torch.allclose(out, manual_forward(enc, tokens, pe), atol=1e-5)


def test_cls_attention_maps(torch_rng):
    enc = PointEncoder(TokenizerConfig(hidden_dims=[[16, 32], [64]]), EncoderConfig(dim=64, depth=3, num_heads=4))
    patches = patchify(torch.randn(2, 256, 3, generator=torch_rng), torch.full((2,), 256), 16, 32, generator=torch_rng)
    maps = enc.cls_attention(patches, blocks=[0, -1])
    assert set(maps) == {0, 2}
    assert maps[2].shape == (2, 4, 16)
    assert torch.all(maps[2] >= 0) and torch.all(maps[2].sum(-1) <= 1.0 + 1e-6)
