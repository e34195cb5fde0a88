"""The job config: includes, overrides, and errors that name the key before any work starts."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from configuration import ConfigError, apply_override
from launch.training.config import deepspeed_config, load_pretrain_config
from launch.training.optim import Schedule, SkippableAdamW
from tests.conftest import ROOT

DEMO = ROOT / "configs" / "pretrain" / "demo.yaml"


def refusal(*overrides: str) -> str:
    """The message of the ConfigError that the demo config with `overrides` raises."""
    with pytest.raises(ConfigError) as err:
        load_pretrain_config(DEMO, list(overrides))
    return str(err.value)


@pytest.mark.parametrize("name", ["demo", "asymdsd_s_shapenet", "asymdsd_b_mixture"])
def test_shipped_configs_validate(name):
    cfg = load_pretrain_config(ROOT / "configs" / "pretrain" / f"{name}.yaml")
    assert cfg.data.global_crops.count == cfg.model.num_global_crops
    assert cfg.optim.grad_clip == 10.0 and cfg.optim.weight_decay == 0.05 and cfg.optim.lr == 5e-4


def test_includes_are_inlined_before_overrides():
    cfg = load_pretrain_config(DEMO, ["model.encoder.depth=2", "deepspeed.zero_optimization.stage=1",
                                      "data.datasets.0.weight=2.5", "train.max_steps=7"])
    assert cfg.model.name == "tiny" and cfg.model.encoder.depth == 2 and cfg.model.encoder.dim == 96
    assert cfg.deepspeed["zero_optimization"]["stage"] == 1
    assert cfg.data.datasets[0].weight == 2.5 and cfg.train.max_steps == 7
    swapped = load_pretrain_config(DEMO, ["deepspeed.zero_optimization.stage=1",
                                          "deepspeed=configs/deepspeed/zero2.json"])
    assert swapped.deepspeed["zero_optimization"]["stage"] == 1 and "reduce_scatter" in swapped.deepspeed["zero_optimization"]


@pytest.mark.parametrize("override, names", [
    ("train.max_stepz=3", ["train.max_stepz", "unknown key", "max_steps"]),
    ("model.encoder.deph=3", ["model.encoder.deph", "depth"]),
    ("optim.lr=-1", ["optim.lr", "greater than 0"]),
    ("data.on_shard_error=ignore", ["data.on_shard_error", "'skip' or 'stop'"]),
    ("train.global_batch=30", ["global_batch=30", "micro_batch"]),  # demo has no micro_batch: fine; see below
])
def test_bad_keys_and_values_are_named(override, names):
    extra = ["train.micro_batch=8"] if "global_batch" in override else []
    text = refusal(override, *extra)
    for name in names:
        assert name in text


def test_override_syntax_errors():
    tree = {"data": {"datasets": [{"url": "a"}]}}
    apply_override(tree, "data.datasets.0.url=s3://b/c")
    assert tree["data"]["datasets"][0]["url"] == "s3://b/c"
    for bad in ("nokey", "=3", "a..b=1", "data.datasets.5.url=x"):
        with pytest.raises(ConfigError):
            apply_override(tree, bad)


def test_deepspeed_batch_keys_follow_the_job_config():
    cfg = load_pretrain_config(DEMO, ["train.global_batch=32", "train.micro_batch=8"])
    ds = deepspeed_config(cfg, world_size=2)
    assert (ds["train_batch_size"], ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"]) == (32, 8, 2)
    assert ds["gradient_clipping"] == 10.0  # explicit: DeepSpeed's code default is 0 (no clipping)
    with pytest.raises(ConfigError, match="does not split over 3 ranks"):
        deepspeed_config(cfg, world_size=3)
    with pytest.raises(ConfigError, match=r"micro_batch x world size \(8 x 8\)"):
        deepspeed_config(cfg, world_size=8)
    clash = load_pretrain_config(DEMO, ["deepspeed.train_batch_size=64"])
    with pytest.raises(ConfigError, match="deepspeed.train_batch_size"):
        deepspeed_config(clash, world_size=1)


@pytest.mark.parametrize("setting", ["auto", "fp32", "bf16", "fp16"])
def test_every_precision_is_selectable(setting):
    cfg = load_pretrain_config(DEMO, [f"train.precision={setting}", "train.device=auto"])
    assert cfg.train.precision == setting


@pytest.mark.parametrize("overrides, names", [
    (["train.precision=fp8"], ["train.precision", "'auto', 'fp32', 'bf16' or 'fp16'"]),
    (["train.precision=fp16", "train.device=cpu"], ["train.precision=fp16", "train.device=cpu"]),
    (["deepspeed.bf16.enabled=true"], ["deepspeed", "'bf16' must not be set", "train.precision"]),
    (["deepspeed.fp16.enabled=true"], ["deepspeed", "'fp16' must not be set", "train.precision"]),
    (["deepspeed.torch_autocast.enabled=true"], ["'torch_autocast' must not be set"]),
])
def test_impossible_precision_settings_name_the_key(overrides, names):
    text = refusal(*overrides)
    for name in names:
        assert name in text


def test_precision_resolves_per_device():
    import torch

    from launch.training.precision import resolve_precision

    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert resolve_precision("auto", torch.device("cuda", 0)) == "bf16"
    assert resolve_precision("fp16", torch.device("cuda", 0)) == "fp16"
    with pytest.raises(ValueError, match="train.precision=fp16 needs a CUDA device"):
        resolve_precision("fp16", torch.device("cpu"))  # device: auto on a machine without a GPU


def test_schedule_is_the_reference_one_from_the_global_batch():
    cfg = load_pretrain_config(ROOT / "configs" / "pretrain" / "asymdsd_s_shapenet.yaml")
    spe = 52_472 // 128 + 1  # ceil: the order pads the last step
    sched = Schedule(cfg, spe)
    w, t = 10 * spe, 300 * spe
    assert sched.total_steps == t
    assert sched.at(0).lr == pytest.approx(1e-7)
    assert sched.at(w // 2).lr == pytest.approx(1e-7 + (5e-4 - 1e-7) * (w // 2) / w)
    mid = w + (t - w) // 3
    assert sched.at(mid).lr == pytest.approx(1e-6 + 0.5 * (5e-4 - 1e-6) * (1 + math.cos(math.pi * (mid - w) / (t - w))))
    assert sched.at(t).lr == pytest.approx(1e-6)
    assert sched.at(123).weight_decay == 0.05  # constant, as the reference
    assert sched.at(0).distill.momentum == pytest.approx(0.995) and sched.at(t).distill.momentum == pytest.approx(1.0)
    assert sched.at(w).distill.teacher_cls_temp == pytest.approx(0.07)


def test_skipped_adamw_step_moves_neither_weights_nor_moments():
    import torch

    p = torch.nn.Parameter(torch.ones(3))
    opt = SkippableAdamW([p], lr=0.1, weight_decay=0.05)
    p.grad = torch.ones(3)
    opt.step()
    before, state = p.detach().clone(), {k: v.clone() for k, v in opt.state[p].items()}
    p.grad = torch.full((3,), 5.0)
    opt.skip_next = True
    opt.step()
    assert torch.equal(p, before) and all(torch.equal(opt.state[p][k], v) for k, v in state.items())
    opt.step()  # only one step is skipped
    assert not torch.equal(p, before)


def test_cli_rejects_a_bad_key_before_any_work(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, str(ROOT / "launch" / "pretrain.py"), "--config", str(DEMO),
                           "--output-dir", str(out), "train.epochz=3"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "invalid pretrain config" in proc.stderr
    assert "train.epochz: unknown key" in proc.stderr and "epochs" in proc.stderr
    assert not out.exists()  # nothing was started


@pytest.mark.parametrize("override, key", [
    ("optim.lr=.inf", "optim.lr"),
    ("optim.eps=.nan", "optim.eps"),
    ("train.epochs=.inf", "train.epochs"),
    ("train.peak_tflops=.inf", "train.peak_tflops"),
    ("data.augment.scale=[0.8, .inf]", "data.augment.scale.1"),
    ("model.loss.student_temp=.nan", "model.loss.student_temp"),
])
def test_every_number_is_finite(override, key):
    assert f"{key}: Input should be a finite number" in refusal(override)


@pytest.mark.parametrize("override, names", [
    ("data.global_crops.scale=[1.5, 0.2]", ["data.global_crops.scale.0", "less than or equal to 1"]),
    ("data.global_crops.scale=[0.9, 0.2]", ["data.global_crops.scale", "low <= high", "[0.9, 0.2]"]),
    ("data.local_crops.scale=[0, 0.4]", ["data.local_crops.scale.0", "greater than 0"]),
    ("data.global_crops.aspect=[0, 3]", ["data.global_crops.aspect.0", "greater than 0"]),
    ("data.local_crops.aspect=[3, 0.33]", ["data.local_crops.aspect", "low <= high"]),
    ("data.augment.scale=[1.2, 0.8]", ["data.augment.scale", "low <= high"]),
    ("optim.betas=[0.9, 1.0]", ["optim.betas.1", "less than 1"]),
])
def test_ranges_are_ordered_and_in_bounds(override, names):
    text = refusal(override)
    for name in names:
        assert name in text


@pytest.mark.parametrize("overrides, names", [
    (["data.global_crops.points=16"], ["data.global_crops.points=16", "model.patchify.global_patches=32"]),
    (["data.local_crops.points=4"], ["data.local_crops.points=4", "model.patchify.local_patches=8"]),
    (["model.patchify.patch_size=200"], ["model.patchify.patch_size=200", "data.local_crops.points=128"]),
    (["model.patchify.patch_size=600", "data.local_crops.points=600"],
     ["model.patchify.patch_size=600", "data.global_crops.points=512"]),
])
def test_crops_hold_enough_points_for_their_patches(overrides, names):
    text = refusal(*overrides)
    for name in names:
        assert name in text


def test_local_crops_the_model_does_not_use_are_not_checked():
    cfg = load_pretrain_config(DEMO, ["model.num_local_crops=0", "data.local_crops.points=4"])
    assert cfg.crop_data().local_crops is None
