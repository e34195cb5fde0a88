"""The driver under faults: a killed run leaves no plan file behind; an unreachable S3 endpoint is one error line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from sharding.shard_corpus import main
from sharding.storage import Output
from tests.conftest import ROOT, free_port, s3_storage


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if not p.is_dir())


@pytest.mark.slow
def test_a_killed_run_leaves_no_plan_file_once_rerun(tmp_path):
    system_tmp = tmp_path / "system-tmp"
    system_tmp.mkdir()
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(system_tmp)}
    command = [sys.executable, "-m", "sharding.shard_corpus", "--source", "synthetic:60", "--output", str(out),
               "--shard-size", "2", "--num-points", "1024", "--in-process", "--no-progress"]
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(list(out.glob("_done/*.json"))) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "manifest.json").exists()  # killed mid-run
    subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True, timeout=300)
    assert (out / "manifest.json").exists()
    assert files_under(system_tmp) == []
    assert not (out / "_tmp").exists()


def test_the_plan_of_a_remote_output_is_staged_locally_and_cleared_by_the_next_run(tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    out = Output("memory://bucket/shards")
    staging = out.plan_dir()
    assert staging.parent.parent == tmp_path and staging.is_dir()
    (staging / "refs.jsonl").write_text("left by a killed run\n")
    assert Output("memory://bucket/shards").plan_dir() == staging and files_under(staging) == []
    assert Output("memory://bucket/other").plan_dir() != staging


def test_a_half_written_shard_of_a_remote_output_is_removed_by_the_next_run(tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    out = Output("memory://bucket/half")
    half = out.scratch_file("train-000002.tar")
    half.write_bytes(b"a tar cut short by SIGKILL")
    assert half.parent.parent == tmp_path and half.parent == Output("memory://bucket/half").local_scratch()
    Output("memory://bucket/half").clear_tmp()
    assert files_under(tmp_path) == []


def test_the_plan_of_a_local_output_is_in_its_staging_area(tmp_path):
    out = Output(str(tmp_path / "out"))
    staging = out.plan_dir()
    assert staging == tmp_path / "out" / "_tmp" / "plan" and staging.is_dir()
    (staging / "refs.jsonl").write_text("left by a killed run\n")
    assert files_under(out.plan_dir()) == []


@pytest.mark.slow
@pytest.mark.parametrize("where", ["output", "source"])
def test_an_unreachable_s3_endpoint_is_one_error_line_within_seconds(tmp_path, capsys, where):
    endpoint = f"http://127.0.0.1:{free_port()}"
    storage = s3_storage(endpoint)
    job = {"sources": [{"kind": "synthetic", "path": "3"}], "output": str(tmp_path / "out")}
    if where == "output":
        job.update(output="s3://bucket/shards", storage_options=storage)
    else:
        job["sources"] = [{"kind": "generic", "path": "s3://bucket/raw", "storage_options": storage}]
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    start = time.monotonic()
    code = main(["--config", str(tmp_path / "job.yaml"), "--no-progress", "--in-process"])
    elapsed = time.monotonic() - start
    err = capsys.readouterr().err
    assert code == 1
    [line] = [line for line in err.splitlines() if not line.startswith("listing")]
    assert line.startswith("error: ") and "EndpointConnectionError" in line and endpoint in line, err
    assert elapsed < 20, elapsed


def test_error_lines_show_no_password_of_a_url(tmp_path, capsys, monkeypatch):
    import sharding.shard_corpus as shard_corpus

    def unreachable(url, storage_options):
        raise OSError(f"could not connect to endpoint https://minio:PASS@minio:9000 for {url}")

    monkeypatch.setattr(shard_corpus, "Output", unreachable)
    code = main(["--source", "synthetic:2", "--output", "s3://AKIA:SECRET@bucket/shards", "--no-progress",
                 "--in-process"])
    err = capsys.readouterr().err
    assert code == 1 and "error: cannot open the output s3://***@bucket/shards" in err
    assert "https://***@minio:9000" in err and "PASS" not in err and "SECRET" not in err
