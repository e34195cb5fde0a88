"""`from_pretrained` and `embed`: every input form, fewer points than asked, repeatable features, the
per-patch outputs, and loading from an export directory or an official checkpoint with only the `model`
extra installed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from model.config import ModelConfig
from model.backbones import build_backbone
from model.export import export_encoder
from model.features import InputSpec, model_input
from model.official import official_state_dict
from model.pretrained import Embedding, PretrainedEncoder, from_pretrained
from tests.conftest import ROOT
from tests.test_extras import blocked_outside

SMALL = InputSpec(num_points=128, num_patches=16, patch_size=16)


@pytest.fixture
def wrapped(tiny_model_config) -> PretrainedEncoder:
    torch.manual_seed(0)
    return PretrainedEncoder(build_backbone(tiny_model_config), tiny_model_config, spec=SMALL)


def clouds(*sizes: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(n, 3)) * [1.0, 0.5, 0.25] + rng.normal(size=3) for n in sizes]


def test_one_cloud_a_batch_and_a_list_give_the_same_features_in_numpy_or_torch(wrapped):
    a, b = clouds(300, 300)
    one = wrapped.embed(a)
    assert one.shape == (1, 2 * wrapped.encoder.dim) and one.dtype == torch.float32 and not one.requires_grad
    torch.testing.assert_close(wrapped.embed(torch.from_numpy(a).float()), one, rtol=0, atol=0)
    batch = wrapped.embed(np.stack([a, b]))
    assert batch.shape == (2, 2 * wrapped.encoder.dim)
    torch.testing.assert_close(wrapped.embed(torch.from_numpy(np.stack([a, b]))), batch, rtol=0, atol=0)
    torch.testing.assert_close(wrapped.embed([a, torch.from_numpy(b)]), batch, rtol=0, atol=0)


def test_a_clouds_features_do_not_depend_on_the_sizes_of_the_others_in_its_list(wrapped):
    a, short, long = clouds(200, 150, 900)
    ragged = wrapped.embed([a, long, short])
    assert ragged.shape == (3, 2 * wrapped.encoder.dim) and torch.isfinite(ragged).all()
    torch.testing.assert_close(wrapped.embed([a, clouds(700, seed=1)[0], short])[0], ragged[0])


def test_clouds_with_fewer_points_than_asked_are_kept_whole(wrapped):
    """10 points: fewer than the 128 asked, the 16 patches and the 16 points per patch."""
    feats = wrapped.embed(clouds(10, 60, 500))
    assert feats.shape == (3, 2 * wrapped.encoder.dim) and torch.isfinite(feats).all()
    assert torch.isfinite(wrapped.embed(clouds(10)[0])).all()


def test_features_repeat_for_a_seed_and_the_encoder_mode_is_restored(wrapped):
    points = clouds(400, 400)
    assert not wrapped.training
    first = wrapped.embed(points)
    torch.testing.assert_close(wrapped.embed(points), first, rtol=0, atol=0)
    assert not torch.equal(wrapped.embed(points, seed=1), first)
    wrapped.train()
    torch.testing.assert_close(wrapped(points), first, rtol=0, atol=0)  # drop path and the like stay off
    assert wrapped.encoder.training


def test_return_tokens_gives_per_patch_outputs_and_centres_among_the_input_points(wrapped):
    points = clouds(300, 90)
    out = wrapped.embed(points, return_tokens=True)
    assert isinstance(out, Embedding)
    torch.testing.assert_close(out.features, wrapped.embed(points), rtol=0, atol=0)
    assert out.tokens.shape == (2, SMALL.num_patches, wrapped.encoder.dim)
    assert out.centers.shape == (2, SMALL.num_patches, 3)
    for cloud, centers in zip(points, out.centers):
        gaps = torch.cdist(centers.double(), torch.from_numpy(cloud)).amin(dim=1)
        assert gaps.max() < 1e-5  # each centre is one of the cloud's own points, in its coordinates


def test_an_encoder_without_cls_token_pools_mean_and_max(tiny_model_config):
    cfg = ModelConfig.model_validate({**tiny_model_config.model_dump(), "mode": "mask",
                                      "encoder": {**tiny_model_config.encoder.model_dump(), "cls_token": False}})
    wrapped = PretrainedEncoder(build_backbone(cfg), cfg, spec=SMALL)
    out = wrapped.embed(clouds(200)[0], return_tokens=True)
    assert wrapped.pooling == ("mean", "max") and out.features.shape == (1, 2 * cfg.encoder.dim)
    assert out.tokens.shape == (1, SMALL.num_patches, cfg.encoder.dim)


def test_bad_shapes_are_refused(wrapped):
    for bad in (np.zeros((5, 2)), np.zeros((2, 3, 4, 3)), [], [np.zeros((0, 3))]):
        with pytest.raises(ValueError):
            wrapped.embed(bad)


def test_from_an_export_directory(tmp_path, tiny_model_config, wrapped):
    export = export_encoder(wrapped.encoder, tiny_model_config, tmp_path / "export", {"step": 7})
    loaded = from_pretrained(export)
    assert not loaded.training and loaded.metadata == {"step": 7, "loaded_from": str(export)}
    assert loaded.spec == model_input(tiny_model_config) and loaded.pooling == ("cls", "mean")
    loaded.spec = SMALL
    points = clouds(300, 200)
    torch.testing.assert_close(loaded.embed(points), wrapped.embed(points), rtol=0, atol=0)
    assert from_pretrained(str(export), num_points=2048).spec.num_patches == 2 * tiny_model_config.patchify.global_patches


def official_checkpoint(path: Path, tiny_model_config: ModelConfig) -> PretrainedEncoder:
    """A random encoder saved in the authors' Lightning layout at `path`, wrapped with the small input.

    Their checkpoints fix no head count: it is width / 64, so this encoder is 128 wide with 2 heads.
    """
    cfg = tiny_model_config.model_copy(
        update={"encoder": tiny_model_config.encoder.model_copy(update={"dim": 128, "num_heads": 2})})
    torch.manual_seed(0)
    wrapped = PretrainedEncoder(build_backbone(cfg), cfg, spec=SMALL)
    theirs = official_state_dict(wrapped.encoder, cfg)
    state = {f"{branch}.point_encoder.{k}": v for branch in ("teacher", "student") for k, v in theirs.items()}
    torch.save({"state_dict": state, "epoch": 299, "global_step": 98100}, path)
    return wrapped


def test_from_an_official_lightning_checkpoint(tmp_path, tiny_model_config):
    wrapped = official_checkpoint(tmp_path / "asymdsd.ckpt", tiny_model_config)
    loaded = from_pretrained(tmp_path / "asymdsd.ckpt")
    assert loaded.metadata["source"] == "official_checkpoint" and loaded.metadata["branch"] == "teacher"
    loaded.spec = SMALL
    points = clouds(300, 200)
    torch.testing.assert_close(loaded.embed(points), wrapped.embed(points))


def test_exports_and_checkpoints_load_with_only_the_model_extra(tmp_path, tiny_model_config):
    export = export_encoder(build_backbone(tiny_model_config), tiny_model_config, tmp_path / "export")
    official_checkpoint(tmp_path / "asymdsd.ckpt", tiny_model_config)
    program = (f"import sys\nfor name in {blocked_outside('model')!r}:\n    sys.modules[name] = None\n"
               "import torch\nfrom model import from_pretrained\n"
               f"for path in {[str(export), str(tmp_path / 'asymdsd.ckpt')]!r}:\n"
               "    print(tuple(from_pretrained(path).embed(torch.rand(50, 3)).shape))\n")
    proc = subprocess.run([sys.executable, "-c", program], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split("\n")[:2] == ["(1, 192)", "(1, 256)"]


def test_an_mlflow_uri_without_mlflow_names_the_extra_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as where the train extra is not installed
    monkeypatch.delitem(sys.modules, "mlflow.artifacts", raising=False)
    with pytest.raises(ImportError, match=r"pip install 'asymdsd-scale\[train\]'"):
        from_pretrained("runs:/0123abcd/encoder")


def test_a_path_that_is_nothing_loadable_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing"):
        from_pretrained(tmp_path / "missing")


@pytest.mark.cuda
def test_input_on_any_device_moves_to_the_encoders_device(wrapped):
    points = clouds(300, 200)
    wrapped.to("cuda")
    on_gpu = wrapped.embed(points)
    assert on_gpu.device.type == "cuda" and torch.isfinite(on_gpu).all()
    torch.testing.assert_close(wrapped.embed([torch.from_numpy(p) for p in points]), on_gpu, rtol=0, atol=0)
