"""Shared fixtures. Tests run on CPU; tests marked `cuda` are skipped where no GPU is present."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def torch_rng() -> torch.Generator:
    """A CPU generator with a fixed seed: every test draws the same tensors."""
    return torch.Generator().manual_seed(1234)


@pytest.fixture(scope="session")
def local_ray():
    """A small in-process Ray instance shared by the tests that run whole jobs in-process."""
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=128 * 2**20, log_to_driver=False)
    yield
    ray.shutdown()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def s3_endpoint():
    """A real S3-protocol server (moto's) on loopback; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


def s3_storage(endpoint: str, secret: str = "s") -> dict:
    """fsspec storage options for `s3_endpoint`."""
    return {"key": "k", "secret": secret, "client_kwargs": {"endpoint_url": endpoint}}


def upload_dir(storage: dict, local: Path, url: str) -> None:
    """Copy the files of `local` (not recursive) to s3://`url`/, creating the bucket."""
    import s3fs

    fs = s3fs.S3FileSystem(**storage)
    fs.mkdir(url.split("/")[0])
    for f in sorted(local.iterdir()):
        if f.is_file():
            fs.put_file(str(f), f"{url}/{f.name}")


def exclude_samples(dataset: Path, excluded: dict[int, list[int]]) -> None:
    """Rewrite `dataset`/manifest.json to exclude, per shard number, those sample indices (increasing), with
    the counts by source, split and reason balanced as the deduplication step writes them (one source)."""
    from sharding.manifest import ShardManifest

    path = dataset / "manifest.json"
    doc = json.loads(path.read_text())
    for shard, indices in excluded.items():
        doc["shardlist"][shard]["excluded"] = indices
    total = sum(len(entry.get("excluded", [])) for entry in doc["shardlist"])
    [source] = doc["sources"].values()
    source["excluded"] = total
    for name, split in doc["splits"].items():
        split["excluded"] = sum(len(e.get("excluded", [])) for e in doc["shardlist"] if e["split"] == name)
    doc["total_excluded"] = total
    doc["deduplication"] = {"report": "dedup/report.json", "report_sha256": "0" * 64, "tolerance": 0.03,
                            "test_sets": [], "excluded": {"duplicate": total}}
    path.write_text(json.dumps(ShardManifest.model_validate(doc).to_json()))
