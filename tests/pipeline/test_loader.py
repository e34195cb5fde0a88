"""The loader end to end: exact-once over ranks and workers, resume, faults, model-ready batches, S3."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from model.asymdsd import AsymDSD
from model.config import PatchifyConfig, load_model_config
from model.schedules import DistillSchedule
from pipeline.config import CropConfig, DataConfig, DatasetConfig
from pipeline.loader import SampleError, load_manifests, make_loader
from pipeline.manifest import ManifestError
from pipeline.order import LoaderState
from pipeline.shards import ShardError, ShardStore
from sharding.manifest import SAMPLE_FORMAT, ShardManifest
from tests.conftest import ROOT, exclude_samples, s3_storage, upload_dir

SMALL = {"global_crops": CropConfig(count=2, points=512, scale=(0.4, 1.0)),
         "local_crops": CropConfig(count=4, points=128, scale=(0.05, 0.4))}
LOADER_PATCHES = PatchifyConfig(global_patches=32, local_patches=8, patch_size=16)


def config(url, storage_options=None, **kw) -> DataConfig:
    dataset = DatasetConfig(url=str(url), storage_options=storage_options or {})
    return DataConfig(datasets=[dataset], **{"block_shards": 2, **SMALL, **kw})


def run_epoch(cfg, world, workers, global_batch=6, state=None, epoch=0, patches=None):
    """{rank: [Batch, ...]} for one epoch (from `state` if given); model-side patchify unless `patches`."""
    manifests = load_manifests(cfg)
    cfg = cfg.model_copy(update={"num_workers": workers})
    out = {}
    for rank in range(world):
        loader, order = make_loader(cfg, patches, 0, manifests, epoch, global_batch, rank, world, state)
        out[rank] = list(loader)
    return out, order


def test_exact_once_over_two_ranks_and_two_workers(uneven_shards):
    cfg = config(uneven_shards)
    batches, order = run_epoch(cfg, world=2, workers=2)
    assert order.num_samples == 20 and order.num_steps == 4 and order.padding == 4
    assert [len(b) for b in batches.values()] == [4, 4]  # equal batch counts per rank, uneven shards
    for rank_batches in batches.values():
        assert [b.step for b in rank_batches] == [0, 1, 2, 3]  # workers interleave back into step order
    positions = torch.cat([b.positions for bs in batches.values() for b in bs]).tolist()
    assert sorted(positions) == list(range(24))
    refs = order.positions()
    samples = Counter((int(refs.shard[p]), int(refs.index[p])) for p in positions if p < order.num_samples)
    assert len(samples) == 20 and set(samples.values()) == {1}  # every sample exactly once...
    assert sum(b.padding for bs in batches.values() for b in bs) == 4  # ...plus the counted padding


def test_batches_have_fixed_shapes_and_feed_the_model(uneven_shards):
    batches, _ = run_epoch(config(uneven_shards), world=1, workers=0, patches=LOADER_PATCHES)
    batch = batches[0][0]
    g, loc = batch.crops.global_crops, batch.crops.local_crops
    assert g.points.shape == (6, 2, 512, 3) and g.points.dtype == torch.float32
    assert loc.points.shape == (6, 4, 128, 3) and torch.all(g.num_points == 512)
    assert g.center_idx.shape == (6, 2, 32) and g.patch_idx.shape == (6, 2, 32, 16)
    model = AsymDSD(load_model_config(ROOT / "configs/model/tiny.yaml"))
    out = model.losses(batch.crops, DistillSchedule(0.04, 0.05, 0.99))
    assert torch.isfinite(out.total) and set(out.terms) == {"cls", "patch", "koleo"}


def test_resume_reads_exactly_the_remaining_batches(uneven_shards):
    cfg = config(uneven_shards)
    full, order = run_epoch(cfg, world=2, workers=0)
    state = order.state(steps_done=2)
    restored = LoaderState.from_dict(json.loads(json.dumps(state.to_dict())))  # as kept in a checkpoint
    for world in (2, 1):  # same world size, and a different one with the same global batch
        resumed, _ = run_epoch(cfg, world=world, workers=0, state=restored)
        expected = torch.cat([torch.cat([b.crops.global_crops.points for rank in sorted(full)
                                         for b in full[rank] if b.step == s]) for s in (2, 3)])
        got = torch.cat([torch.cat([b.crops.global_crops.points for rank in sorted(resumed)
                                    for b in resumed[rank] if b.step == s]) for s in (2, 3)])
        assert torch.equal(got, expected)


def test_epochs_differ_and_are_reproducible(uneven_shards):
    cfg = config(uneven_shards)
    a, _ = run_epoch(cfg, world=1, workers=0, epoch=0)
    b, _ = run_epoch(cfg, world=1, workers=0, epoch=0)
    c, _ = run_epoch(cfg, world=1, workers=0, epoch=1)
    first = a[0][0].crops.global_crops.points
    assert torch.equal(first, b[0][0].crops.global_crops.points)
    assert not torch.equal(first, c[0][0].crops.global_crops.points)


def test_corrupt_shard_is_skipped_or_stops_the_run(uneven_shards, tmp_path, capsys):
    data = tmp_path / "d"
    shutil.copytree(uneven_shards, data)
    manifest = json.loads((data / "manifest.json").read_text())
    bad = data / manifest["shardlist"][1]["url"]
    raw = bytearray(bad.read_bytes())
    raw[3000] ^= 0xFF
    bad.write_bytes(bytes(raw))
    batches, order = run_epoch(config(data), world=1, workers=0)
    skipped = sum(b.skipped for b in batches[0])
    # every position that reads that shard (its samples, and padded repeats of them) is counted
    assert skipped == int((order.positions().shard == 1).sum()) >= manifest["shardlist"][1]["nsamples"]
    assert all(b.crops.global_crops.points.shape[0] == 6 for b in batches[0])  # shapes stay fixed
    assert "sha256 differs" in capsys.readouterr().out
    with pytest.raises(ShardError, match="sha256 differs"):
        run_epoch(config(data, on_shard_error="stop"), world=1, workers=0)


@pytest.mark.slow
def test_the_same_pipeline_reads_from_s3(uneven_shards, s3_endpoint):
    storage = s3_storage(s3_endpoint)
    upload_dir(storage, uneven_shards, "bucket/uneven")
    remote = config("s3://bucket/uneven", storage_options=storage)
    from_s3, _ = run_epoch(remote, world=1, workers=2)
    local, _ = run_epoch(config(uneven_shards), world=1, workers=0)
    for a, b in zip(from_s3[0], local[0]):
        assert torch.equal(a.crops.global_crops.points, b.crops.global_crops.points)
        assert torch.equal(a.crops.local_crops.points, b.crops.local_crops.points)
    assert len(from_s3[0]) == len(local[0]) == 4


def test_meter_separates_data_wait_from_the_step():
    from pipeline.loader import Batch
    from pipeline.metrics import LoaderMeter

    now = [0.0]

    def batches():
        for step in range(3):
            now[0] += 1.0  # the loader takes 1 s per batch
            yield Batch(step, None, torch.arange(4), padding=step == 2, skipped=1, load_seconds=0.5)

    meter = LoaderMeter(batches(), clock=lambda: now[0])
    for _ in meter:
        now[0] += 3.0  # the training step takes 3 s
    s = meter.stats
    assert (s.batches, s.samples, s.skipped, s.padding) == (3, 12, 3, 1)
    assert s.wait_seconds == 3.0 and s.elapsed_seconds == 12.0
    assert s.data_wait_fraction == 0.25 and s.samples_per_s == 1.0
    assert s.as_metrics()["data/worker_seconds_per_batch"] == 0.5


def test_data_wait_never_exceeds_the_time_it_is_part_of():
    """Read during the step, as the trainer does: the wait just ended is inside the elapsed time."""
    from pipeline.loader import Batch
    from pipeline.metrics import LoaderMeter

    now = [0.0]

    def batches():
        for step, wait in enumerate((1.0, 10.0, 1.0)):
            now[0] += wait
            yield Batch(step, None, torch.arange(4), padding=0, skipped=0, load_seconds=wait)

    meter = LoaderMeter(batches(), clock=lambda: now[0])
    fractions = []
    for _ in meter:
        fractions.append(meter.stats.data_wait_fraction)
        now[0] += 0.1
    assert fractions == pytest.approx([1.0, 11.0 / 11.1, 12.0 / 12.2])


def test_single_crop_mode_feeds_the_mask_model(uneven_shards):
    from model.config import model_config_from_dict

    cfg = config(uneven_shards, global_crops=CropConfig(count=1, points=512, scale=(0.4, 1.0)), local_crops=None,
                 block_shards=8)
    batch = run_epoch(cfg, world=1, workers=0, patches=LOADER_PATCHES)[0][0][0]
    assert batch.crops.local_crops is None and batch.crops.global_crops.points.shape == (6, 1, 512, 3)
    tiny = load_model_config(ROOT / "configs/model/tiny.yaml").model_dump()
    tiny.update(mode="mask", num_global_crops=1, num_local_crops=0, encoder={**tiny["encoder"], "cls_token": False})
    out = AsymDSD(model_config_from_dict(tiny)).losses(batch.crops, DistillSchedule(0.04, 0.05, 0.99))
    assert set(out.terms) == {"patch", "regression"} and torch.isfinite(out.total)


def test_missing_shard_is_skipped_and_counted(uneven_shards, tmp_path, capsys):
    data = tmp_path / "d"
    shutil.copytree(uneven_shards, data)
    (data / "train-000002.tar").unlink()
    batches, order = run_epoch(config(data), world=1, workers=0)
    assert sum(b.skipped for b in batches[0]) == int((order.positions().shard == 2).sum()) > 0
    assert "train-000002.tar: missing" in capsys.readouterr().out


def write_dataset(root: Path, shards: list[list[np.ndarray]]) -> Path:
    """A dataset as the sharding job lays it out: tars of `<key>.points.npy` + `<key>.json`, a manifest."""
    entries = []
    for s, clouds in enumerate(shards):
        name = f"train-{s:06d}.tar"
        with tarfile.open(root / name, "w") as tar:
            for i, points in enumerate(clouds):
                npy = io.BytesIO()
                np.save(npy, points)
                for suffix, data in (("points.npy", npy.getvalue()), ("json", json.dumps({}).encode())):
                    info = tarfile.TarInfo(f"s{s}-{i:03d}.{suffix}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        raw = (root / name).read_bytes()
        entries.append({"url": name, "nsamples": len(clouds), "filesize": len(raw),
                        "sha256": hashlib.sha256(raw).hexdigest(), "split": "train"})
    total = sum(len(c) for c in shards)
    manifest = ShardManifest.model_validate({
        "shardlist": entries, "total_inputs": total, "total_samples": total, "total_failed": 0,
        "sources": {"hand": {"inputs": total, "samples": total, "failed": 0}},
        "splits": {"train": {"shards": len(shards), "samples": total}},
        "sample": {"num_points": len(shards[0][0]), "dtype": "float32", "format": SAMPLE_FORMAT},
        "config_hash": "test", "plan_hash": "test", "tool_version": "test"})
    (root / "manifest.json").write_text(json.dumps(manifest.to_json()))
    return root


def test_a_sample_with_non_finite_points_is_skipped_alone_or_stops_the_run(tmp_path, capsys):
    rng = np.random.default_rng(0)
    clouds = [[rng.normal(size=(2048, 3)).astype(np.float32) for _ in range(4)] for _ in range(2)]
    clouds[1][2][5] = [np.nan, 0.0, np.inf]
    data = write_dataset(tmp_path, clouds)
    shard = str(data / "train-000001.tar")
    batches, order = run_epoch(config(data), world=1, workers=0, global_batch=4)
    refs = order.positions()
    # that sample alone is replaced, at every position that reads it; the rest of its shard is used
    assert sum(b.skipped for b in batches[0]) == int(((refs.shard == 1) & (refs.index == 2)).sum()) == 1
    crops = [c for b in batches[0] for c in (b.crops.global_crops, b.crops.local_crops)]
    assert all(torch.isfinite(c.points).all() for c in crops)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[pipeline]")]
    assert lines == [f"[pipeline] skipping shard {shard}: sample s1-002: 2 non-finite values in points.npy"]
    with pytest.raises(SampleError, match="sample s1-002: 2 non-finite") as err:
        run_epoch(config(data, on_shard_error="stop"), world=1, workers=0, global_batch=4)
    assert (err.value.url, err.value.key) == (shard, "s1-002") and isinstance(err.value, ShardError)


def test_skip_lines_show_no_url_userinfo(tmp_path, capsys, monkeypatch):
    rng = np.random.default_rng(0)
    data = write_dataset(tmp_path, [[rng.normal(size=(2048, 3)).astype(np.float32) for _ in range(4)]] * 2)
    read = ShardStore.sample

    def sample(store, shard, index):
        if shard.url.endswith("train-000001.tar"):
            raise ShardError("s3://KEY:PASS@bucket/train-000001.tar", "unreadable after 4 attempts")
        return read(store, shard, index)

    monkeypatch.setattr(ShardStore, "sample", sample)
    run_epoch(config(data), world=1, workers=0, global_batch=4)
    out = capsys.readouterr().out
    assert "PASS" not in out and "skipping shard s3://***@bucket/train-000001.tar: unreadable" in out


def test_excluded_samples_are_never_read(uneven_shards, tmp_path, monkeypatch):
    data = tmp_path / "d"
    shutil.copytree(uneven_shards, data)
    exclude_samples(data, {0: [1, 5], 1: [0], 2: list(range(6))})  # shard 2 wholly: 11 of 20 samples kept
    [manifest] = load_manifests(config(data))
    assert manifest.num_samples == 11 and manifest.shards[1].excluded == (0,)
    store = ShardStore()
    key = {(s, i): store.sample(shard, i).key
           for s, shard in enumerate(manifest.shards) for i in range(shard.nsamples)}
    excluded = {key[s, i] for s, shard in enumerate(manifest.shards) for i in shard.excluded}
    assert len(excluded) == 9

    batches, order = run_epoch(config(data), world=2, workers=2, global_batch=4)
    assert (order.num_samples, order.num_steps, order.padding) == (11, 3, 1)
    assert [[b.step for b in bs] for bs in batches.values()] == [[0, 1, 2], [0, 1, 2]]
    assert all(len(b.positions) == 2 for bs in batches.values() for b in bs)
    refs = order.positions()
    positions = sorted(torch.cat([b.positions for bs in batches.values() for b in bs]).tolist())
    assert positions == list(range(12))
    read = Counter(key[int(refs.shard[p]), int(refs.index[p])] for p in positions if p < order.num_samples)
    assert set(read) == set(key.values()) - excluded and set(read.values()) == {1}

    loaded = []  # the samples actually decoded, in-process (no workers)
    read_sample = ShardStore.sample

    def recorded(self, shard, index):
        loaded.append((shard.url, index))
        return read_sample(self, shard, index)

    monkeypatch.setattr(ShardStore, "sample", recorded)
    run_epoch(config(data), world=1, workers=0, global_batch=4)
    urls = [shard.url for shard in manifest.shards]
    assert len(loaded) == 12 and {key[urls.index(url), i] for url, i in loaded} == set(read)


def test_a_split_with_only_excluded_samples_has_no_samples(uneven_shards, tmp_path):
    data = tmp_path / "d"
    shutil.copytree(uneven_shards, data)
    exclude_samples(data, {0: list(range(7)), 1: list(range(7)), 2: list(range(6))})
    with pytest.raises(ManifestError, match=r"no samples in split 'train' \(all 20 are excluded\)"):
        load_manifests(config(data))
