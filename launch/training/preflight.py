"""What a pretraining job checks before any process group, model or engine: directories, data, batch, resume point.

A wrong path or size found here is a `ConfigError` (or `CheckpointError`) that names the key, which the
launcher prints as one `error:` line: not a traceback from every rank once DeepSpeed has started, not a
failure at the first checkpoint, not a step too large for the machine. The manifests read here are the
ones the run uses.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from configuration import PROJECT_ROOT, ConfigError, read_mapping
from launch.training.checkpoint import resolve_resume
from launch.training.config import PretrainConfig
from pipeline.config import DatasetConfig
from pipeline.loader import dataset_shards
from pipeline.manifest import Manifest, ManifestError, load_manifest

ENDPOINT_TIMEOUT_S = 5.0  # to open a connection to an S3 endpoint


@dataclass(frozen=True)
class Inputs:
    """What the checks read: every dataset's manifest, and the checkpoint to resume from (None: start fresh)."""

    manifests: list[Manifest]
    resume: tuple[Path, str] | None = None  # (checkpoint directory, tag)


def preflight(cfg: PretrainConfig, resume: str | None = None) -> Inputs:
    """Check `cfg` against the machine and the data; `resume` is the `--resume` argument."""
    check_writable("output_dir", Path(cfg.output_dir))
    check_writable("checkpoint.dir", cfg.checkpoint_dir())
    if cfg.data.read.cache_dir is not None:
        check_writable("data.read.cache_dir", Path(cfg.data.read.cache_dir))
    manifests = [dataset_manifest(f"data.datasets.{i}", d) for i, d in enumerate(cfg.data.datasets)]
    check_global_batch(cfg, manifests)
    return Inputs(manifests, None if resume is None else resolve_resume(resume, cfg.checkpoint_dir()))


def check_writable(key: str, path: Path) -> None:
    """`path` is a writable directory, or can be made one: its nearest existing ancestor is a writable directory."""
    existing = path.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        where = "is a file" if existing == path.absolute() else f"is inside {existing}, which is a file"
        raise ConfigError(f"{key}={path} {where}, not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{key}={path}: {existing} is not writable")


def dataset_manifest(key: str, dataset: DatasetConfig) -> Manifest:
    """The dataset's manifest, or a `ConfigError` naming the key, the path and the command that writes it."""
    endpoint = s3_endpoint(dataset) if dataset.url.startswith("s3://") else None
    if endpoint is not None:
        check_reachable(f"{key}.url={dataset.url}", endpoint)
    try:
        return load_manifest(dataset.url, dataset.storage_options, dataset.split)
    except ManifestError as err:
        raise ConfigError(f"{key}.url: {err} (a dataset is written by: {shard_command(dataset.url)})") from None
    except Exception as err:  # noqa: BLE001 (whatever the filesystem raises: it is named, with the endpoint)
        where = f" from {endpoint}" if endpoint else ""
        raise ConfigError(f"{key}.url={dataset.url}: cannot read the manifest{where}: {type(err).__name__}: "
                          f"{' '.join(str(err).split())}") from None


def shard_command(url: str) -> str:
    """The sharding command that writes a dataset at `url`, with the shipped data config whose output it is."""
    directory = url.removesuffix("manifest.json").rstrip("/") if url.endswith(".json") else url.rstrip("/")
    configs = sorted((PROJECT_ROOT / "configs" / "data").glob("*.yaml"))
    config = next((f"configs/data/{p.name}" for p in configs
                   if os.path.normpath(str(read_mapping(p).get("output", ""))) == os.path.normpath(directory)),
                  "configs/data/<corpus>.yaml")
    return f"python -m sharding.shard_corpus --config {config} --output {directory}"


def s3_endpoint(dataset: DatasetConfig) -> str | None:
    """scheme://host:port of the dataset's S3 endpoint (never its credentials); None: AWS's own."""
    options = dataset.storage_options
    url = (options.get("endpoint_url") or (options.get("client_kwargs") or {}).get("endpoint_url")
           or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"))
    if not url:
        return None
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.scheme}://{parts.hostname}:{port}"


def check_reachable(what: str, endpoint: str, timeout_s: float = ENDPOINT_TIMEOUT_S) -> None:
    """A connection to `endpoint` opens within `timeout_s`, or a `ConfigError` naming it."""
    parts = urlsplit(endpoint)
    try:
        socket.create_connection((parts.hostname, parts.port), timeout=timeout_s).close()
    except OSError as err:
        reason = err.strerror or str(err) or type(err).__name__
        raise ConfigError(f"{what}: S3 endpoint {endpoint} is unreachable ({reason}; tried for up to "
                          f"{timeout_s:g} s)") from None


def check_global_batch(cfg: PretrainConfig, manifests: list[Manifest]) -> None:
    """One optimizer step must not need more samples than an epoch of the datasets holds."""
    per_epoch = sum(dataset_shards(m, d.weight).num_selected for m, d in zip(manifests, cfg.data.datasets))
    if cfg.train.global_batch > per_epoch:
        sizes = ", ".join(f"{m.num_samples} in {m.url}" for m in manifests)
        raise ConfigError(f"train.global_batch={cfg.train.global_batch} is more than the corpus holds: an epoch has "
                          f"{per_epoch} samples ({sizes}); lower train.global_batch")
