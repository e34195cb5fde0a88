"""Manifests and shard access: validation, checksums, broken tars, S3 with retries."""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import psutil
import pytest

from pipeline import shards as shards_module
from pipeline.config import ReadConfig
from pipeline.manifest import ManifestError, load_manifest, parse_manifest
from pipeline.shards import ShardError, ShardStore, decode_npy, index_tar
from tests.conftest import free_port, s3_storage, upload_dir


def copy_dataset(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_manifest_resolves_shards_next_to_it(synthetic_shards):
    m = load_manifest(str(synthetic_shards))  # a directory means its manifest.json
    assert m.num_samples == 24 and len(m.shards) == 3
    assert all(s.url.startswith(str(synthetic_shards)) and s.sha256 and s.filesize for s in m.shards)
    assert load_manifest(str(synthetic_shards / "manifest.json")).digest == m.digest


def without(doc: dict, key: str) -> dict:
    return {k: v for k, v in doc.items() if k != key}


def with_first_shard(doc: dict, **entry: object) -> dict:
    return {**doc, "shardlist": [{**doc["shardlist"][0], **entry}, *doc["shardlist"][1:]]}


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda doc: b"{not json", "not valid JSON"),
        (lambda doc: {**doc, "__kind__": "other"}, "__kind__ must be 'wids-shard-index-v1', got 'other'"),
        (lambda doc: {**doc, "shardlist": {}}, "shardlist: Input should be a valid list"),
        (lambda doc: with_first_shard(doc, nsamples="8"),
         r"shardlist\.0\.nsamples: Input should be a valid integer \(got '8'\)"),
        (lambda doc: without(doc, "total_failed"), "total_failed: Field required"),
    ],
    ids=["json", "kind", "shardlist", "nsamples", "missing-key"],
)
def test_malformed_manifests_are_named(synthetic_shards, change, message):
    """The file and the key are named (the schema itself is tested with sharding.manifest)."""
    bad = change(json.loads((synthetic_shards / "manifest.json").read_text()))
    with pytest.raises(ManifestError, match=message) as err:
        parse_manifest(bad if isinstance(bad, bytes) else json.dumps(bad).encode(), "/data/x/manifest.json")
    assert "/data/x/manifest.json" in str(err.value)


def test_a_split_without_samples_is_an_error(synthetic_shards):
    data = (synthetic_shards / "manifest.json").read_bytes()
    with pytest.raises(ManifestError, match="manifest /data/x/manifest.json: no samples in split 'val'"):
        parse_manifest(data, "/data/x/manifest.json", split="val")
    assert parse_manifest(data, "/data/x/manifest.json", split=None).document.splits["train"].samples == 24


def test_missing_manifest(tmp_path):
    with pytest.raises(ManifestError, match="manifest not found"):
        load_manifest(str(tmp_path / "nowhere"))


def test_store_reads_every_sample_of_the_manifest(synthetic_shards):
    m = load_manifest(str(synthetic_shards))
    store = ShardStore()
    keys = []
    for shard in m.shards:
        for i in range(shard.nsamples):
            sample = store.sample(shard, i)
            assert sample.points.shape == (16384, 3) and sample.points.dtype == np.float32
            assert sample.meta["key"] == sample.key
            keys.append(sample.key)
    assert len(set(keys)) == 24


def npy_bytes(array: np.ndarray) -> bytearray:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return bytearray(buf.getvalue())


@pytest.mark.parametrize(
    "array",
    [
        np.random.default_rng(0).standard_normal((16384, 3)).astype(np.float32),
        np.asfortranarray(np.arange(15, dtype=np.float64).reshape(5, 3)),
        np.arange(7, dtype=">i2"),
        np.zeros((0, 3), np.float16),
    ],
)
def test_decoded_points_equal_np_load_and_view_the_bytes(array):
    data = npy_bytes(array)
    decoded = decode_npy(data)
    expected = np.load(io.BytesIO(bytes(data)), allow_pickle=False)
    assert decoded.dtype == expected.dtype and decoded.shape == expected.shape
    assert np.array_equal(decoded, expected)
    if array.size:
        assert np.shares_memory(decoded, np.frombuffer(data, np.uint8))  # no copy
        decoded[0] = 1  # a writable view of the member's buffer, as np.load's result is writable


def test_undecodable_points_are_refused():
    good = npy_bytes(np.ones((10, 3), np.float32))
    with pytest.raises(ValueError, match="truncated"):
        decode_npy(good[:-4])
    with pytest.raises(ValueError, match="bad magic"):
        decode_npy(b"PK\x03\x04" + bytes(good[4:]))
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="would need pickles"):
        decode_npy(buf.getvalue())


def test_store_names_the_sample_with_bad_points(synthetic_shards, tmp_path):
    data = copy_dataset(synthetic_shards, tmp_path / "d")
    m = load_manifest(str(data))
    key, members = index_tar(m.shards[0].url, m.shards[0].url)[2]
    offset, _ = members["points.npy"]
    with open(m.shards[0].url, "r+b") as f:  # same size: only the decode can notice
        f.seek(offset)
        f.write(b"XXXXXX")  # overwrites the .npy magic bytes
    store = ShardStore(ReadConfig(verify=False))
    assert store.sample(m.shards[0], 1).points.shape == (16384, 3)
    with pytest.raises(ShardError, match=f"sample {key}: points.npy: not a .npy file"):
        store.sample(m.shards[0], 2)


def test_corrupt_shard_fails_its_checksum(synthetic_shards, tmp_path):
    data = copy_dataset(synthetic_shards, tmp_path / "d")
    m = load_manifest(str(data))
    raw = bytearray(open(m.shards[1].url, "rb").read())
    raw[5000] ^= 0xFF  # same size, different content
    open(m.shards[1].url, "wb").write(bytes(raw))
    store = ShardStore()
    store.sample(m.shards[0], 0)
    with pytest.raises(ShardError, match="sha256 differs"):
        store.sample(m.shards[1], 0)


def test_truncated_and_missing_shards(synthetic_shards, tmp_path):
    data = copy_dataset(synthetic_shards, tmp_path / "d")
    m = load_manifest(str(data))
    with open(m.shards[0].url, "r+b") as f:
        f.truncate(20000)
    with pytest.raises(ShardError, match="size 20000 bytes, the manifest says"):
        ShardStore().sample(m.shards[0], 0)
    # Without checksums in the manifest the tar structure is still checked.
    doc = json.loads((data / "manifest.json").read_text())
    for entry in doc["shardlist"]:
        entry.pop("filesize"), entry.pop("sha256")
    unchecked = parse_manifest(json.dumps(doc).encode(), str(data / "manifest.json"))
    with pytest.raises(ShardError, match="broken tar|holds .* samples"):
        ShardStore().sample(unchecked.shards[0], 0)
    (data / m.shards[2].url.rsplit("/", 1)[1]).unlink()
    with pytest.raises(ShardError, match="missing"):
        ShardStore().sample(m.shards[2], 0)


@pytest.mark.slow
def test_same_reader_on_s3(synthetic_shards, tmp_path, s3_endpoint):
    storage = s3_storage(s3_endpoint)
    upload_dir(storage, synthetic_shards, "data/synthetic")
    m = load_manifest("s3://data/synthetic", storage)
    assert m.digest == load_manifest(str(synthetic_shards)).digest
    store = ShardStore(ReadConfig(cache_dir=str(tmp_path / "cache")), storage)
    local = ShardStore()
    local_m = load_manifest(str(synthetic_shards))
    for shard, local_shard in zip(m.shards, local_m.shards):
        assert np.array_equal(store.sample(shard, 3).points, local.sample(local_shard, 3).points)
    assert len(list((tmp_path / "cache").iterdir())) == 3  # downloaded once each, then read locally


def open_tars() -> set[str]:
    return {f.path for f in psutil.Process().open_files() if f.path.endswith(".tar")}


def test_store_keeps_a_bounded_set_of_shard_files_open(synthetic_shards, monkeypatch):
    monkeypatch.setattr(shards_module, "OPEN_FILES", 2)
    m = load_manifest(str(synthetic_shards))
    store = ShardStore()
    first = [store.sample(shard, 0).points.copy() for shard in m.shards]  # three shards, two stay open
    assert open_tars() == {m.shards[1].url, m.shards[2].url}
    assert np.array_equal(store.sample(m.shards[0], 0).points, first[0])  # reopened on demand
    assert open_tars() == {m.shards[2].url, m.shards[0].url}
    store.close()
    assert open_tars() == set()


@pytest.mark.slow
def test_evicted_downloads_are_closed_and_removed(synthetic_shards, tmp_path, s3_endpoint):
    storage = s3_storage(s3_endpoint)
    upload_dir(storage, synthetic_shards, "evicted/synthetic")
    m = load_manifest("s3://evicted/synthetic", storage)
    store = ShardStore(ReadConfig(cache_dir=str(tmp_path / "cache"), cache_bytes=1), storage)
    for shard in m.shards:
        store.sample(shard, 0)
    cached = list((tmp_path / "cache").iterdir())
    assert len(cached) == 1 and open_tars() == {str(cached[0])}  # only the newest download is kept
    store.close()
    assert open_tars() == set()


def test_unreachable_storage_fails_after_retries(synthetic_shards, tmp_path):
    storage = {**s3_storage(f"http://127.0.0.1:{free_port()}"),  # nothing listens there
               "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 1}}
    m = load_manifest(str(synthetic_shards))
    shard = type(m.shards[0])("s3://data/synthetic/train-000000.tar", 8, None, None)
    store = ShardStore(ReadConfig(retries=2, backoff_s=0.01, cache_dir=str(tmp_path / "c")), storage)
    with pytest.raises(ShardError, match="unreadable after 3 attempts"):
        store.sample(shard, 0)
    assert store.retries_used == 2
