"""Importing the authors' checkpoints: a model written in their key layout (as a Lightning .ckpt with
their kind of pickled hyper-parameters) comes back with the same weights and outputs; files that would
run code are refused or made inert; layouts this encoder cannot represent are named."""

from __future__ import annotations

import dataclasses
import enum
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from launch.evaluation.encoders import random_encoder
from model.config import load_model_config
from model.official import (
    OfficialCheckpointError,
    infer_model_config,
    load_official_encoder,
    official_state_dict,
)
from model.patchify import patchify
from tests.conftest import ROOT
from tests.launch.eval_reference_forward import reference_forward

MODELS = ROOT / "configs" / "model"


@pytest.fixture(scope="module")
def shallow_s_encoders():
    """AsymDSD-S's architecture (S tokenizer, width 384, 6 heads) at depth 2, so forwards stay cheap."""
    cfg = load_model_config(MODELS / "asymdsd_s.yaml")
    cfg = cfg.model_copy(update={"encoder": cfg.encoder.model_copy(update={"depth": 2})})
    return cfg, random_encoder(cfg, 0), random_encoder(cfg, 1)


@pytest.fixture(scope="module")
def patches():
    points = torch.rand(3, 512, 3, generator=torch.Generator().manual_seed(0))
    return patchify(points, torch.full((3,), 512), 32, 32, generator=torch.Generator().manual_seed(1))


def _fake_reference_module():
    """Classes standing in for the authors' config objects, importable while the checkpoint is written."""
    pkg, mod = types.ModuleType("asymdsd_authors"), types.ModuleType("asymdsd_authors.layers")

    @dataclasses.dataclass
    class TransformerEncoderConfig:
        embed_dim: int = 384
        norm_layer: type = torch.nn.LayerNorm

    class TrainingMode(enum.Enum):
        CLS_MASK = "cls_mask"

    for cls in (TransformerEncoderConfig, TrainingMode):
        cls.__module__, cls.__qualname__ = mod.__name__, cls.__name__
        setattr(mod, cls.__name__, cls)
    pkg.layers = mod
    return pkg, mod


def write_lightning_ckpt(path: Path, teacher: dict, student: dict | None = None, **extra) -> Path:
    """A Lightning-style checkpoint: state_dict with teacher/student point encoders plus pickled hparams."""
    pkg, mod = _fake_reference_module()
    sys.modules.update({"asymdsd_authors": pkg, "asymdsd_authors.layers": mod})
    try:
        state = {f"teacher.point_encoder.{k}": v for k, v in teacher.items()}
        state.update({f"student.point_encoder.{k}": v for k, v in (student or teacher).items()})
        state["teacher.cls_projection_head.mlp.0.weight"] = torch.zeros(4, 4)
        hparams = {"encoder_config": mod.TransformerEncoderConfig(), "training_mode": mod.TrainingMode.CLS_MASK,
                   "data_path": Path("/data/ShapeNetCore.v2.zip"), **extra}
        torch.save({"state_dict": state, "hyper_parameters": hparams, "epoch": 299, "global_step": 98100,
                    "pytorch-lightning_version": "2.2.5"}, path)
    finally:
        del sys.modules["asymdsd_authors.layers"], sys.modules["asymdsd_authors"]
    return path


def test_full_s_layout_matches_the_published_parameter_count():
    cfg = load_model_config(MODELS / "asymdsd_s.yaml")
    theirs = official_state_dict(random_encoder(cfg), cfg)
    assert sum(v.numel() for v in theirs.values()) == 21_786_240  # the published AsymDSD-S parameter count
    inferred = infer_model_config(theirs, "official:S")
    assert inferred.tokenizer.hidden_dims == [[128, 256], [512]] and not inferred.tokenizer.bias
    assert (inferred.encoder.dim, inferred.encoder.depth, inferred.encoder.num_heads, inferred.encoder.mlp_ratio) == (
        384, 12, 6, 4.0)
    assert "patch_embedding.point_embedding.block_2.3.weight" in theirs
    assert theirs["encoder.stack.11.self_attn.attn.in_proj_weight"].shape == (3 * 384, 384)


def test_b_layout_has_the_biased_variable_tokenizer():
    cfg = load_model_config(MODELS / "asymdsd_b.yaml")
    cfg = cfg.model_copy(update={"encoder": cfg.encoder.model_copy(update={"depth": 1})})
    theirs = official_state_dict(random_encoder(cfg), cfg)
    assert theirs["patch_embedding.point_embedding.blocks.0.mlp.8.weight"].shape == (1024, 512)
    assert theirs["patch_embedding.point_embedding.blocks.1.mlp.4.bias"].shape == (768,)
    inferred = infer_model_config(theirs, "official:B")
    assert inferred.tokenizer.hidden_dims == [[256, 512, 1024], [2048]] and inferred.tokenizer.bias
    assert inferred.encoder.num_heads == 12


def test_checkpoint_round_trips_through_the_official_layout(tmp_path, shallow_s_encoders, patches):
    cfg, teacher, student = shallow_s_encoders
    theirs = official_state_dict(teacher, cfg)
    path = write_lightning_ckpt(tmp_path / "AsymDSD-S_ShapeNet.ckpt", theirs, official_state_dict(student, cfg))
    encoder, got_cfg, meta = load_official_encoder(path)
    assert (got_cfg.encoder.dim, got_cfg.encoder.depth, got_cfg.encoder.num_heads) == (384, 2, 6)
    assert got_cfg.tokenizer == cfg.tokenizer and got_cfg.mode == "cls_mask"
    assert meta["epoch"] == 299 and meta["global_step"] == 98100 and meta["branch"] == "teacher"
    for key, value in teacher.state_dict().items():
        torch.testing.assert_close(encoder.state_dict()[key], value, rtol=0, atol=0)
    with torch.no_grad():
        ours = encoder(patches)
    torch.testing.assert_close(ours, teacher(patches), rtol=0, atol=0)
    torch.testing.assert_close(ours, reference_forward(theirs, patches, num_heads=6), rtol=1e-4, atol=1e-5)


def test_student_branch_and_legacy_block_names(tmp_path, shallow_s_encoders, patches):
    cfg, teacher, student = shallow_s_encoders
    legacy = {k.replace(".self_attn.", ".attn_module.").replace(".ffn.", ".ffn_module."): v
              for k, v in official_state_dict(student, cfg).items()}
    path = write_lightning_ckpt(tmp_path / "old.ckpt", official_state_dict(teacher, cfg), legacy)
    encoder, _, meta = load_official_encoder(path, branch="student")
    assert meta["branch"] == "student"
    with torch.no_grad():
        torch.testing.assert_close(encoder(patches), student(patches), rtol=0, atol=0)


def test_given_model_config_fixes_the_heads(tmp_path):
    cfg = load_model_config(MODELS / "tiny.yaml")  # width 96 with 3 heads of 32: not inferable from shapes
    tiny = random_encoder(cfg, 0)
    path = write_lightning_ckpt(tmp_path / "tiny.ckpt", official_state_dict(tiny, cfg))
    encoder, got_cfg, _ = load_official_encoder(path, model_cfg=cfg)
    assert got_cfg.encoder.num_heads == 3
    torch.testing.assert_close(encoder.state_dict(), tiny.state_dict(), rtol=0, atol=0)


class Unpickles:
    """An object whose unpickling calls `function(*args)`: what a hostile checkpoint carries."""

    def __init__(self, function, *args) -> None:
        self.call = (function, args)

    def __reduce__(self):
        return self.call


def test_foreign_callables_in_the_hyperparameters_never_run(tmp_path, shallow_s_encoders):
    cfg, teacher, _ = shallow_s_encoders
    marker = tmp_path / "ran"
    callback = Unpickles(subprocess.call, ["touch", str(marker)])
    path = write_lightning_ckpt(tmp_path / "x.ckpt", official_state_dict(teacher, cfg), callback=callback)
    encoder, _, _ = load_official_encoder(path)
    assert not marker.exists()
    torch.testing.assert_close(encoder.state_dict(), teacher.state_dict(), rtol=0, atol=0)


def test_checkpoints_naming_blocked_modules_are_refused(tmp_path, shallow_s_encoders):
    cfg, teacher, _ = shallow_s_encoders
    marker = tmp_path / "ran"
    payload = Unpickles(os.system, f"touch {marker}")
    path = write_lightning_ckpt(tmp_path / "evil.ckpt", official_state_dict(teacher, cfg), payload=payload)
    with pytest.raises(OfficialCheckpointError, match=r"evil\.ckpt: refused, .*weights_only=True"):
        load_official_encoder(path)
    assert not marker.exists()


def test_not_a_checkpoint(tmp_path):
    bad = tmp_path / "notes.ckpt"
    bad.write_text("hello")
    with pytest.raises(OfficialCheckpointError, match="not a PyTorch zip checkpoint"):
        load_official_encoder(bad)
    with pytest.raises(OfficialCheckpointError, match="not found"):
        load_official_encoder(tmp_path / "missing.ckpt")


def test_unrepresentable_or_incomplete_layouts_are_named(tmp_path, shallow_s_encoders):
    cfg, teacher, _ = shallow_s_encoders
    theirs = official_state_dict(teacher, cfg)
    layer_norm = {**theirs, "encoder.norm.bias": torch.zeros(384)}
    with pytest.raises(OfficialCheckpointError, match=r"cannot represent .*encoder\.norm\.bias"):
        load_official_encoder(write_lightning_ckpt(tmp_path / "ln.ckpt", layer_norm))
    missing = {k: v for k, v in theirs.items() if k != "encoder.stack.1.ffn.norm.weight"}
    with pytest.raises(OfficialCheckpointError, match=r"missing encoder\.stack\.1\.ffn\.norm\.weight"):
        load_official_encoder(write_lightning_ckpt(tmp_path / "cut.ckpt", missing))
    with pytest.raises(OfficialCheckpointError, match="no 'teacher.point_encoder"):
        torch.save({"state_dict": {"model.w": torch.zeros(1)}}, tmp_path / "other.ckpt")
        load_official_encoder(tmp_path / "other.ckpt")
