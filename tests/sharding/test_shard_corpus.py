"""The sharding job end to end: accounting, hostile inputs, determinism, resume, failure budget, WebDataset."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds

from sharding.shard_corpus import main
from tests.sharding.corpora import BAD_INPUTS, write_escaping_zip, write_mesh_dir


def run(tmp: Path, *extra: str, out: str = "out", sources: tuple[str, ...] = ()) -> tuple[int, Path]:
    out_dir = tmp / out
    code = main(["--output", str(out_dir), "--no-progress", "--shard-size", "8", *sources, *extra])
    return code, out_dir


def corpus_sources(tmp: Path) -> tuple[str, ...]:
    return ("--source", "synthetic:30", "--source", f"generic:{write_mesh_dir(tmp / 'meshes')}")


def read_manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


@pytest.mark.slow
def test_every_input_is_a_sample_or_a_logged_failure(tmp_path, local_ray):
    code, out = run(tmp_path, "--max-failure-ratio", "0.5", sources=corpus_sources(tmp_path))
    assert code == 0
    m = read_manifest(out)
    assert m["__kind__"] == "wids-shard-index-v1" and m["wids_version"] == 1
    assert (m["total_inputs"], m["total_samples"], m["total_failed"]) == (40, 34, 6)
    assert m["sources"] == {
        "generic": {"inputs": 10, "samples": 4, "failed": 6, "excluded": 0},
        "synthetic": {"inputs": 30, "samples": 30, "failed": 0, "excluded": 0},
    }
    sizes = [s["nsamples"] for s in m["shardlist"]]
    assert len(sizes) == 5 and sum(sizes) == 34  # 40 inputs -> 5 balanced shards of 8, minus failures
    assert json.loads((out / "sizes.json").read_text()) == {s["url"]: s["nsamples"] for s in m["shardlist"]}
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    by_file = {Path(e["path"].split("!")[-1]).name: e for e in errors}
    assert set(by_file) == set(BAD_INPUTS)
    for name, (_, stage) in BAD_INPUTS.items():
        assert by_file[name]["stage"] == stage, (name, by_file[name])
        assert by_file[name]["reason"] and by_file[name]["key"].startswith("generic_broken-")
    for shard in m["shardlist"]:  # checksums and sizes in the manifest are the files'
        data = (out / shard["url"]).read_bytes()
        assert len(data) == shard["filesize"]
        import hashlib

        assert hashlib.sha256(data).hexdigest() == shard["sha256"]


@pytest.mark.slow
def test_stock_webdataset_reads_every_sample(tmp_path, local_ray):
    code, out = run(tmp_path, "--max-failure-ratio", "0.5", sources=corpus_sources(tmp_path))
    m = read_manifest(out)
    urls = [str(out / s["url"]) for s in m["shardlist"]]
    dataset = wds.WebDataset(urls, shardshuffle=False, nodesplitter=wds.split_by_node, empty_check=False).decode()
    seen = {}
    for sample in dataset:
        points, meta = sample["points.npy"], sample["json"]
        assert points.shape == (16384, 3) and points.dtype == np.float32 and np.isfinite(points).all()
        assert meta["key"] == sample["__key__"] and meta["num_points"] == 16384 and len(meta["sha256"]) == 64
        seen[sample["__key__"]] = meta
    assert len(seen) == m["total_samples"] == 34
    synthetic = [meta for key, meta in seen.items() if key.startswith("synthetic_")]
    assert len({meta["label"] for meta in synthetic}) >= 10


@pytest.mark.slow
def test_two_runs_are_bit_identical(tmp_path, local_ray):
    sources = corpus_sources(tmp_path)
    _, a = run(tmp_path, "--max-failure-ratio", "0.5", out="a", sources=sources)
    _, b = run(tmp_path, "--max-failure-ratio", "0.5", "--max-in-flight", "1", out="b", sources=sources)
    assert (a / "manifest.json").read_bytes() == (b / "manifest.json").read_bytes()
    for shard in read_manifest(a)["shardlist"]:
        assert (a / shard["url"]).read_bytes() == (b / shard["url"]).read_bytes()


@pytest.mark.slow
def test_rerun_resumes_an_interrupted_job(tmp_path, local_ray):
    sources = corpus_sources(tmp_path)
    _, full = run(tmp_path, "--max-failure-ratio", "0.5", out="full", sources=sources)
    reference = (full / "manifest.json").read_bytes()
    # An interrupted run: no manifest yet, 3 of 5 shards never finished, one left a half-written temp.
    (full / "manifest.json").unlink()
    shards = sorted(p.name for p in full.glob("train-*.tar"))
    for name in shards[:3]:
        (full / name).unlink()
        (full / "_done" / f"{name}.json").unlink()
    (full / "_tmp").mkdir(exist_ok=True)
    (full / "_tmp" / f"{shards[0]}.deadbeef").write_bytes(b"partial")
    code, _ = run(tmp_path, "--max-failure-ratio", "0.5", out="full", sources=sources)
    assert code == 0
    assert (full / "manifest.json").read_bytes() == reference
    stats = json.loads((full / "stats.json").read_text())
    assert (stats["shards_written"], stats["shards_skipped"]) == (3, 2)
    assert not (full / "_tmp").exists()


@pytest.mark.slow
def test_failure_budget(tmp_path, local_ray, capsys):
    code, out = run(tmp_path, sources=corpus_sources(tmp_path))  # default 1%: 6 of 40 failed
    assert code == 1
    err = capsys.readouterr().err
    assert "above --max-failure-ratio" in err and "most common errors" in err and "validate:" in err
    assert read_manifest(out)["total_failed"] == 6  # outputs are still complete and accounted for


def test_archive_member_escaping_the_root_stops_the_job(tmp_path, capsys):
    archive = write_escaping_zip(tmp_path / "evil.zip")
    code, out = run(tmp_path, "--in-process", sources=("--source", f"generic:{archive}"))
    assert code == 1
    err = capsys.readouterr().err
    assert "error: cannot list the sources: UnsafeMemberError" in err and "escapes the archive root" in err
    assert not (out / "manifest.json").exists() and not list(out.glob("*.tar"))


@pytest.mark.slow
def test_float16_and_point_cloud_inputs(tmp_path, local_ray):
    clouds = tmp_path / "clouds"
    clouds.mkdir()
    rng = np.random.default_rng(0)
    np.save(clouds / "big.npy", rng.normal(size=(20000, 3)))
    np.save(clouds / "small.npy", rng.normal(size=(2000, 6)))
    np.save(clouds / "tiny.npy", rng.normal(size=(100, 3)))  # fewer than min_points: refused
    (clouds / "text.xyz").write_text("\n".join("1 2 3" for _ in range(1500)))
    buf = io.BytesIO()
    np.save(buf, np.array([object()], dtype=object), allow_pickle=True)
    (clouds / "pickled.npy").write_bytes(buf.getvalue())  # must be refused, never unpickled
    code, out = run(tmp_path, "--dtype", "float16", "--max-failure-ratio", "0.5",
                    sources=("--source", f"generic:{clouds}"))
    assert code == 0
    m = read_manifest(out)
    assert (m["total_samples"], m["total_failed"]) == (3, 2)
    samples = {s["__key__"]: s for s in wds.WebDataset(str(out / m["shardlist"][0]["url"]), shardshuffle=False,
                                                       empty_check=False).decode()}
    assert samples["generic_big-npy"]["points.npy"].shape == (16384, 3)
    assert samples["generic_big-npy"]["points.npy"].dtype == np.float16
    assert samples["generic_small-npy"]["json"]["num_points"] == 2000  # fewer points: kept whole, count recorded
    errors = (out / "errors.jsonl").read_text()
    assert "pickle" in errors.lower() and "100 points < min_points 1024" in errors


@pytest.mark.slow
def test_shard_names_and_splits(tmp_path, local_ray):
    code, out = run(tmp_path, sources=("--source", "synthetic:20"), out="s")
    m = read_manifest(out)
    assert [s["url"] for s in m["shardlist"]] == [f"train-{i:06d}.tar" for i in range(3)]
    assert [s["nsamples"] for s in m["shardlist"]] == [7, 7, 6]
    assert m["splits"] == {"train": {"shards": 3, "samples": 20, "excluded": 0}}
    shutil.rmtree(out)
