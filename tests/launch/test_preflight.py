"""What a job checks before any process group or model: directories, manifests, S3 endpoints, the batch, memory."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from configuration import ConfigError
from launch.training.checkpoint import resolve_resume
from launch.training.config import load_pretrain_config
from launch.training.errors import CheckpointError
from launch.training.memory import activation_bytes, check_micro_batch, free_bytes
from launch.training.preflight import preflight, shard_command
from sharding.manifest import KIND
from tests.conftest import ROOT, exclude_samples, free_port, s3_storage

DEMO = ROOT / "configs" / "pretrain" / "demo.yaml"


def fake_dataset(directory: Path, samples: int, shards: int = 1) -> Path:
    """A valid manifest for `samples` samples in `shards` shards; the shard files are not written."""
    per = samples // shards
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "manifest.json").write_text(json.dumps({
        "__kind__": KIND, "wids_version": 1,
        "shardlist": [{"url": f"train-{i:06d}.tar", "nsamples": per, "split": "train"} for i in range(shards)],
        "total_inputs": per * shards, "total_samples": per * shards, "total_failed": 0,
        "sources": {"synthetic": {"inputs": per * shards, "samples": per * shards, "failed": 0}},
        "splits": {"train": {"shards": shards, "samples": per * shards}},
        "sample": {"num_points": 4096, "dtype": "float32", "format": "<key>.points.npy + <key>.json"},
        "config_hash": "0", "plan_hash": "0", "tool_version": "test",
    }))
    return directory


def config(tmp_path: Path, *overrides: str, samples: int = 400):
    data = fake_dataset(tmp_path / "data", samples)
    return load_pretrain_config(DEMO, [f"data.datasets.0.url={data}", f"output_dir={tmp_path / 'run'}", *overrides])


def refusal(cfg, resume: str | None = None) -> str:
    with pytest.raises((ConfigError, CheckpointError)) as err:
        preflight(cfg, resume)
    return str(err.value)


def test_a_sound_job_passes_with_its_manifests(tmp_path):
    inputs = preflight(config(tmp_path, "data.read.cache_dir=" + str(tmp_path / "cache")))
    assert [m.num_samples for m in inputs.manifests] == [400] and inputs.resume is None
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()  # checked, not created


@pytest.mark.parametrize("key", ["checkpoint.dir", "output_dir", "data.read.cache_dir"])
def test_directories_that_are_files_are_named(tmp_path, key):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    text = refusal(config(tmp_path, f"{key}={blocker}"))
    assert text == f"{key}={blocker} is a file, not a directory"
    text = refusal(config(tmp_path, f"{key}={blocker}/below"))
    assert text == f"{key}={blocker}/below is inside {blocker}, which is a file, not a directory"


def test_a_missing_dataset_names_the_key_the_path_and_the_command_that_writes_it(tmp_path):
    missing = load_pretrain_config(DEMO, [f"output_dir={tmp_path}", f"data.datasets.0.url={tmp_path / 'none'}"])
    text = refusal(missing)
    assert f"data.datasets.0.url: manifest not found: {tmp_path / 'none'}/manifest.json" in text
    assert f"python -m sharding.shard_corpus --config configs/data/<corpus>.yaml --output {tmp_path / 'none'}" in text
    # the shipped data config that writes a dataset is named: the demo's data/shards/synthetic
    assert shard_command("data/shards/synthetic/manifest.json") == (
        "python -m sharding.shard_corpus --config configs/data/synthetic.yaml --output data/shards/synthetic")


def test_an_unreachable_s3_endpoint_is_named_within_seconds(tmp_path):
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    storage = json.dumps(s3_storage(endpoint, secret="PASS-9"))
    cfg = config(tmp_path, "data.datasets.0.url=s3://bucket/shards", f"data.datasets.0.storage_options={storage}")
    start = time.monotonic()
    text = refusal(cfg)
    assert time.monotonic() - start < 6
    assert text.startswith(f"data.datasets.0.url=s3://bucket/shards: S3 endpoint {endpoint} is unreachable (")
    userinfo = load_pretrain_config(DEMO, [
        "data.datasets.0.url=s3://bucket/shards", f"output_dir={tmp_path}",
        f"data.datasets.0.storage_options.endpoint_url=http://user:PASS-9@127.0.0.1:{free_port()}"])
    assert "PASS-9" not in refusal(userinfo)


def test_a_global_batch_larger_than_the_corpus_is_refused_with_its_size(tmp_path):
    text = refusal(config(tmp_path, "train.global_batch=100000"))
    assert text.startswith("train.global_batch=100000 is more than the corpus holds: an epoch has 400 samples")
    half = config(tmp_path, "train.global_batch=256", "data.datasets.0.weight=0.5")  # 200 samples an epoch
    assert "an epoch has 200 samples" in refusal(half)
    assert preflight(config(tmp_path, "train.global_batch=400")).manifests
    exclude_samples(tmp_path / "data", {0: list(range(100))})  # what config() writes, less 100 samples
    cfg = load_pretrain_config(DEMO, [f"data.datasets.0.url={tmp_path / 'data'}", f"output_dir={tmp_path / 'run'}",
                                      "train.global_batch=400"])
    assert refusal(cfg).startswith("train.global_batch=400 is more than the corpus holds: an epoch has 300 samples")


def test_resume_points_are_checked_before_the_engine(tmp_path):
    ckpt = tmp_path / "ckpt"
    with pytest.raises(CheckpointError, match=f"--resume {tmp_path}/nope: no such file or directory"):
        resolve_resume(str(tmp_path / "nope"), ckpt)
    assert resolve_resume("latest", ckpt) is None  # nothing yet: start fresh
    ckpt.mkdir()
    (ckpt / "latest").write_text("")
    with pytest.raises(CheckpointError, match=f"{ckpt}/latest is empty"):
        resolve_resume("latest", ckpt)
    (ckpt / "latest").write_text("step00000004\n")
    with pytest.raises(CheckpointError, match=f"{ckpt}/latest names step00000004, but {ckpt}/step00000004 does not"):
        resolve_resume(str(ckpt), ckpt)
    (ckpt / "step00000004").mkdir()
    with pytest.raises(CheckpointError, match="step00000004 is incomplete: it holds no \\*model_states.pt"):
        resolve_resume("latest", ckpt)
    (ckpt / "step00000004" / "mp_rank_00_model_states.pt").write_bytes(b"")
    assert resolve_resume("latest", ckpt) == resolve_resume(str(ckpt / "step00000004"), ckpt) == (ckpt, "step00000004")
    (ckpt / "latest").write_text("../../etc")
    with pytest.raises(CheckpointError, match="names '../../etc', which is not a tag"):
        resolve_resume("latest", ckpt)
    cfg = config(tmp_path, f"checkpoint.dir={ckpt}")
    assert "which is not a tag" in refusal(cfg, "latest")


def test_the_activation_estimate_is_a_lower_bound_that_grows_with_the_model():
    cfg = load_pretrain_config(DEMO)
    tiny = activation_bytes(cfg.model, "fp32")
    # tiny: 8 masked views of 1 + 10 visible tokens, crop 0 unmasked (33), 4 local crops of 9: 157 rows;
    # 4 blocks of 96 wide with MLP ratio 2 keep 12 x 96 values a row
    assert tiny == 157 * 4 * 12 * 96 * 4
    assert activation_bytes(cfg.model, "bf16") == tiny // 2
    wider = load_pretrain_config(DEMO, ["model.encoder.dim=192"]).model
    assert activation_bytes(wider, "fp32") == 2 * tiny
    recomputed = load_pretrain_config(DEMO, ["model.encoder.checkpoint_blocks=true"]).model
    assert activation_bytes(recomputed, "fp32") == (157 * 4 * 96 + 157 * 12 * 96) * 4


def test_a_micro_batch_beyond_free_memory_is_refused_unless_the_check_is_off():
    cfg = load_pretrain_config(DEMO)
    per_sample = activation_bytes(cfg.model, "fp32")
    check_micro_batch(cfg, 32, "fp32", free=32 * per_sample)
    with pytest.raises(ConfigError) as err:
        check_micro_batch(cfg, 100_000, "fp32", free=16 * 2**30)
    assert str(err.value).startswith("train.micro_batch: 100000 samples per rank and micro-step need at least "
                                     f"{100_000 * per_sample / 2**30:.1f} GiB of activations (fp32, a lower bound")
    assert "16.0 GiB is free" in str(err.value) and "train.memory_check=false" in str(err.value)
    unchecked = load_pretrain_config(DEMO, ["train.memory_check=false"])
    check_micro_batch(unchecked, 100_000, "fp32", free=16 * 2**30)
    assert 0 < free_bytes(torch.device("cpu"), 2) < free_bytes(torch.device("cpu"), 1)
