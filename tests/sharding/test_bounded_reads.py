"""`max_bytes` bounds memory: sizes are checked before reading, and no read returns more than max_bytes + 1."""

from __future__ import annotations

import io
import json
import os
import re
import struct
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import h5py
import numpy as np
import psutil
import pytest
import yaml

from sharding.containers import open_container
from sharding.meshio import decode_geometry
from sharding.records import ShapeError
from tests.conftest import ROOT
from tests.sharding.archives import write_big_tar_gz, write_tree, write_zip_bomb

LIMIT = 1000
BOMB = 1 << 30  # inflated size of the hostile members
JOB_LIMIT = 50_000_000  # the job's max_bytes: the bombs are 20 times that
PEAK_RSS = 600 << 20  # any one process of the job, Ray workers included; reading a bomb would take > 1 GiB


def refused(result: bytes | Exception, size: int) -> bool:
    """Whether a read was refused for the size the input declares."""
    return isinstance(result, ShapeError) and str(result) == f"limits: input is {size} bytes > max_bytes {LIMIT}"


def spy(monkeypatch, cls: type, method: str, opened: list[str]) -> None:
    """Record the member name of every call to `cls.method` (ZipFile.open, TarFile.extractfile)."""
    original = getattr(cls, method)

    def recorded(self, member, *args, **kwargs):
        opened.append(getattr(member, "name", getattr(member, "filename", member)))
        return original(self, member, *args, **kwargs)

    monkeypatch.setattr(cls, method, recorded)


def test_members_over_the_limit_are_refused_by_their_declared_size_unread(tmp_path, monkeypatch):
    files = {"big.xyz": bytes(LIMIT + 1), "ok.xyz": bytes(LIMIT)}
    tree = write_tree(tmp_path / "tree", files)
    with zipfile.ZipFile(tmp_path / "a.zip", "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(name, data)
    with tarfile.open(tmp_path / "a.tar.gz", "w:gz") as tar:
        for name in files:
            tar.add(tree / name, name)
    opened: list[str] = []
    spy(monkeypatch, zipfile.ZipFile, "open", opened)
    spy(monkeypatch, tarfile.TarFile, "extractfile", opened)
    for uri in ("a.zip", "a.tar.gz", "tree"):
        with open_container(str(tmp_path / uri), max_bytes=LIMIT) as c:
            results = dict(c.read_many(["big.xyz", "ok.xyz"]))
        assert refused(results["big.xyz"], LIMIT + 1), (uri, results["big.xyz"])
        assert results["ok.xyz"] == bytes(LIMIT), uri
    assert opened and "big.xyz" not in opened
    with open_container(str(tree / "big.xyz"), max_bytes=LIMIT) as single:
        assert refused(next(single.read_many([""]))[1], LIMIT + 1)


def test_a_file_larger_than_it_claims_is_cut_at_the_limit(tmp_path, monkeypatch):
    write_tree(tmp_path / "tree", {"grown.xyz": bytes(10 * LIMIT)})
    with open_container(str(tmp_path / "tree"), max_bytes=LIMIT) as c:
        info = c.fs.info
        monkeypatch.setattr(c.fs, "info", lambda path, **kw: {**info(path, **kw), "size": 10})  # it grew since
        with pytest.raises(ShapeError, match=f"more than max_bytes {LIMIT}"):
            c.read("grown.xyz")


def test_a_zip_member_inflating_past_its_declared_size_is_an_error(tmp_path):
    """The header says 100 bytes; the data inflates to 10 MB. Reading stops at the declared size and fails."""
    path = tmp_path / "liar.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("liar.xyz", bytes(10 << 20))
    data = bytearray(path.read_bytes())
    local, central = data.find(b"PK\x03\x04"), data.find(b"PK\x01\x02")
    struct.pack_into("<I", data, local + 22, 100)
    struct.pack_into("<I", data, central + 24, 100)
    path.write_bytes(bytes(data))
    with open_container(str(path), max_bytes=LIMIT) as c:
        with pytest.raises(zipfile.BadZipFile, match="CRC"):
            c.read("liar.xyz")


def test_arrays_packed_in_npz_and_h5_files_are_sized_before_unpacking():
    zeros = np.zeros((100_000, 3))  # 2.4 MB unpacked, a few KB packed
    npz, h5 = io.BytesIO(), io.BytesIO()
    np.savez_compressed(npz, points=zeros)
    with h5py.File(h5, "w") as f:
        f.create_dataset("points", data=zeros, compression="gzip")
    for name, data, member in (("a.npz", npz.getvalue(), "points.npy"), ("a.h5", h5.getvalue(), "points")):
        assert len(data) < 100_000
        with pytest.raises(ShapeError, match=re.escape(f"{name}[{member}] is ") + r"24\d{5} bytes > max_bytes 1000000"):
            decode_geometry(data, name, max_bytes=1_000_000)


@pytest.fixture(scope="module")
def bombs(tmp_path_factory) -> dict[str, Path]:
    """A 5 MB zip whose member inflates to 1 GiB, and a .tar.gz with a 1 GiB member (built in chunks)."""
    root = tmp_path_factory.mktemp("bombs")
    return {"zipped": write_zip_bomb(root / "bomb.zip", BOMB), "tarred": write_big_tar_gz(root / "big.tar.gz", BOMB)}


def peak_rss(proc: subprocess.Popen, timeout: float) -> int:
    """The largest resident set of `proc` or any of its descendants (Ray's workers), sampled every 20 ms."""
    root, peak, deadline = psutil.Process(proc.pid), 0, time.monotonic() + timeout
    while proc.poll() is None:
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the sharding job ran past {timeout} s")
        try:
            processes = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            break
        for p in processes:
            try:
                peak = max(peak, p.memory_info().rss)
            except psutil.Error:
                continue
        time.sleep(0.02)
    return peak


@pytest.mark.slow
@pytest.mark.parametrize("mode", [["--in-process"], ["--num-cpus", "1"]], ids=["in-process", "ray"])
def test_archive_bombs_are_refused_with_memory_bounded(tmp_path, bombs, mode):
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({
        "sources": [{"kind": "generic", "name": name, "path": str(path)} for name, path in bombs.items()]
        + [{"kind": "synthetic", "path": "2"}],
        "output": str(tmp_path / "out"), "max_bytes": JOB_LIMIT, "num_points": 2048, "max_failure_ratio": 1,
    }))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("RAY_ADDRESS", None)
    with open(tmp_path / "log", "w") as log:
        command = [sys.executable, "-m", "sharding.shard_corpus", "--config", str(job), "--no-progress", *mode]
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        peak = peak_rss(proc, timeout=300)
    assert proc.returncode == 0, (tmp_path / "log").read_text()[-3000:]
    assert peak < PEAK_RSS, f"peak RSS {peak >> 20} MiB"
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert (manifest["total_inputs"], manifest["total_samples"], manifest["total_failed"]) == (4, 2, 2)
    errors = {e["source"]: e for e in map(json.loads, (tmp_path / "out" / "errors.jsonl").read_text().splitlines())}
    for name in bombs:
        assert errors[name]["stage"] == "limits"
        assert errors[name]["reason"] == f"input is {BOMB} bytes > max_bytes {JOB_LIMIT}"
