"""`--in-process`: the shard tasks run in the driver without Ray and write the very bytes a Ray run writes."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest

from sharding.shard_corpus import main
from tests.sharding.corpora import write_mesh_dir


def shard(tmp: Path, out: str, *extra: str) -> Path:
    sources = ("--source", "synthetic:20", "--source", f"generic:{write_mesh_dir(tmp / 'meshes')}")
    out_dir = tmp / out
    code = main(["--output", str(out_dir), "--no-progress", "--shard-size", "6", "--num-points", "2048",
                 "--max-failure-ratio", "0.5", *sources, *extra])
    assert code == 0
    return out_dir


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_in_process_run_equals_the_ray_run_byte_for_byte(tmp_path, local_ray, monkeypatch):
    on_ray = shard(tmp_path, "ray")
    monkeypatch.setitem(sys.modules, "ray", None)  # any `import ray` now fails: the run must not need it
    here = shard(tmp_path, "here", "--in-process")
    assert sha256(here / "manifest.json") == sha256(on_ray / "manifest.json")
    manifest = json.loads((here / "manifest.json").read_text())
    assert manifest["total_failed"] == 6  # the hostile inputs are logged failures both ways
    assert len(manifest["shardlist"]) == 5
    for entry in manifest["shardlist"]:
        assert sha256(here / entry["url"]) == sha256(on_ray / entry["url"]) == entry["sha256"]
    assert (here / "errors.jsonl").read_bytes() == (on_ray / "errors.jsonl").read_bytes()
