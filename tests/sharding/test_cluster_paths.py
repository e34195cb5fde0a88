"""The job on its real transports: S3 through moto's server, the embedded local Ray, `ray job submit`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import fsspec
import psutil
import pytest
import s3fs
import webdataset as wds
import yaml

from sharding.dedup.__main__ import main as dedup_main
from sharding.shard_corpus import main
from tests.conftest import ROOT, free_port, s3_storage
from tests.sharding.corpora import write_mesh_dir

SECRET = "s3cr3t-never-logged"


@pytest.mark.slow
def test_s3_round_trip(tmp_path, local_ray, s3_endpoint):
    storage = s3_storage(s3_endpoint, secret=SECRET)
    fs = s3fs.S3FileSystem(**storage)
    fs.mkdir("raw")
    fs.mkdir("shards")
    meshes = write_mesh_dir(tmp_path / "meshes", good=6, bad=False)
    for f in sorted(meshes.rglob("*.obj")):
        fs.put_file(str(f), f"raw/meshes/{f.relative_to(meshes).as_posix()}")
    with zipfile.ZipFile(tmp_path / "meshes.zip", "w") as z:
        for f in sorted(meshes.rglob("*.obj")):
            z.write(f, f"zipped/{f.relative_to(meshes).as_posix()}")
    fs.put_file(str(tmp_path / "meshes.zip"), "raw/meshes.zip")
    cfg = {
        "sources": [
            {"kind": "generic", "path": "s3://raw/meshes", "options": {"label_from_parent": True},
             "storage_options": storage},
            {"kind": "generic", "name": "zipped", "path": "s3://raw/meshes.zip", "storage_options": storage},
        ],
        "output": "s3://shards/mix",
        "storage_options": storage,
        "shard_size": 4,
        "dedup": {"exclude": ["duplicate"]},
    }
    (tmp_path / "s3.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["--config", str(tmp_path / "s3.yaml"), "--no-progress"]) == 0
    manifest = json.loads(fs.cat("shards/mix/manifest.json"))
    assert (manifest["total_inputs"], manifest["total_samples"]) == (12, 12)
    # Three meshes (box, sphere, cylinder), each twice in the tree and twice more in the zip: 9 exact copies.
    report = json.loads(fs.cat("shards/mix/dedup/report.json"))
    assert manifest["total_excluded"] == 9 and len(report["groups"]) == 3
    assert all(c["exact"] for g in report["groups"] for c in g["copies"])
    assert len(fs.ls("shards/mix/fingerprints")) == len(manifest["shardlist"])
    before = fs.cat("shards/mix/manifest.json")
    assert dedup_main(["--config", str(tmp_path / "s3.yaml")]) == 0  # the job's output, options and `dedup:`
    assert fs.cat("shards/mix/manifest.json") == before
    assert not fs.exists("shards/mix/_tmp") or not fs.ls("shards/mix/_tmp")  # temporaries copied away
    for name in ("manifest.json", "stats.json", "errors.jsonl", "sizes.json", "dedup/report.json"):
        assert SECRET not in fs.cat(f"shards/mix/{name}").decode()

    def s3_open(url: str, mode: str = "rb", bufsize: int = 8192, **kw):
        return fsspec.open(url, mode, **storage).open()

    wds.gopen_schemes["s3"] = s3_open  # webdataset has no s3:// handler of its own
    urls = [f"s3://shards/mix/{s['url']}" for s in manifest["shardlist"]]
    samples = list(wds.WebDataset(urls, shardshuffle=False, empty_check=False).decode())
    assert len(samples) == 12
    labelled = [s for s in samples if s["__key__"].startswith("generic_")]
    assert {s["json"]["label"] for s in labelled} == {"class0", "class1"}


@pytest.mark.slow
def test_embedded_local_ray_from_the_command_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run(
        [sys.executable, "-m", "sharding.shard_corpus", "--source", "synthetic:6", "--output", str(tmp_path / "o"),
         "--shard-size", "4", "--num-cpus", "1", "--no-progress"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((tmp_path / "o" / "manifest.json").read_text())["total_samples"] == 6
    assert "done: 6 samples in 2 shards" in proc.stderr


def _stop_ray_cluster(temp_dir: str) -> None:
    """Stop only the Ray processes of this test's cluster (`ray stop` would kill every Ray on the machine)."""
    procs = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(temp_dir in arg for arg in p.info["cmdline"] or []):
                procs.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    for p in procs:
        p.terminate()
    _, alive = psutil.wait_procs(procs, timeout=10)
    for p in alive:
        p.kill()


@pytest.mark.slow
def test_ray_start_and_job_submit(tmp_path):
    ray_bin = str(Path(sys.executable).parent / "ray")
    temp_dir = tempfile.mkdtemp(prefix="rayt", dir="/tmp")  # short: Ray's socket paths have a length limit
    dash = free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    env.pop("RAY_ADDRESS", None)
    subprocess.run(
        [ray_bin, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(free_port()),
         "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash), "--num-cpus", "2",
         # Own ports for the agents: another Ray on this machine (the session's in-process one) may
         # hold the fixed defaults, and a head whose job agent cannot bind never accepts jobs.
         "--dashboard-agent-listen-port", str(free_port()), "--dashboard-agent-grpc-port", str(free_port()),
         "--runtime-env-agent-port", str(free_port()), "--metrics-export-port", str(free_port()),
         "--temp-dir", temp_dir, "--disable-usage-stats"],
        check=True, env=env, capture_output=True, timeout=120,
    )
    try:
        out = tmp_path / "job-out"
        submit = [ray_bin, "job", "submit", "--address", f"http://127.0.0.1:{dash}", "--working-dir", str(ROOT), "--",
                  sys.executable, "-m", "sharding.shard_corpus", "--source", "synthetic:10", "--output", str(out),
                  "--shard-size", "5", "--no-progress"]
        deadline = time.monotonic() + 60  # the head's job agent comes up some seconds after `ray start`
        while True:
            proc = subprocess.run(submit, env=env, capture_output=True, text=True, timeout=300)
            if "No available agent" not in proc.stderr + proc.stdout or time.monotonic() > deadline:
                break
            time.sleep(3)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
        assert "succeeded" in proc.stdout.lower()
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["total_samples"] == 10 and len(manifest["shardlist"]) == 2
    finally:
        _stop_ray_cluster(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)
