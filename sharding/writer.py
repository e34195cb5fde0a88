"""Build one shard: load its inputs, sample them, write a deterministic tar, publish it atomically.

Runs inside a Ray task (or in-process). The shard's completion record `_done/<shard>.json` is
published last, after the tar: a record whose plan and config hashes match, next to a tar of the
recorded size, means the shard is finished, which is what makes re-running the same command resume.

A sample is `<key>.points.npy` and `<key>.json`; one sampled from a mesh with semantic parts also has
`<key>.parts.npy` (each point's part, uint8), and its metadata lists the `part_names` those index.
Each shard's fingerprints (`sharding.dedup.sidecar`) are published with it, for `sharding.dedup`.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np

from sharding.dedup.sidecar import ShardFingerprints, sidecar_name
from sharding.fingerprint import geometry_fingerprint, shape_descriptor
from sharding.limits import Limits, time_limit
from sharding.plan import failure_record, input_path
from sharding.records import InputRef, Loaded, ShapeError
from sharding.sampling import Cloud, SampleSpec, make_points
from sharding.sources import SourceSpec, make_reader
from sharding.storage import Output


@dataclass(frozen=True)
class ShardJob:
    """Everything a shard task needs besides its refs (small and picklable)."""

    output: str
    storage_options: dict
    sources: dict[str, SourceSpec]  # by source name
    sample: SampleSpec
    limits: Limits
    plan_hash: str
    config_hash: str


def done_name(shard: str) -> str:
    return f"_done/{shard}.json"


def finished_record(out: Output, shard: str, job: ShardJob) -> dict | None:
    """The completion record if this shard is already done for this plan and config, else None."""
    if not out.exists(done_name(shard)):
        return None
    record = out.read_json(done_name(shard))
    if record.get("plan_hash") != job.plan_hash or record.get("config_hash") != job.config_hash:
        return None
    if not out.exists(shard) or out.size(shard) != record.get("filesize") or not out.exists(sidecar_name(shard)):
        return None
    return record


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    """Fixed metadata (mtime, owner, mode) so identical content gives an identical tar."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


def _npy_bytes(points: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, points, allow_pickle=False)
    return buf.getvalue()


def _metadata(ref: InputRef, raw_sha256: str, cloud: Cloud) -> bytes:
    meta = {
        "key": ref.key,
        "source": ref.source,
        "kind": ref.kind,
        "path": input_path(ref),
        "uid": ref.uid,
        "label": ref.label,
        "category": ref.category,
        "split": ref.split,
        "num_points": len(cloud.points),
        "sha256": raw_sha256,
    }
    if cloud.parts is not None:
        meta["part_names"] = list(cloud.part_names)
    return json.dumps(meta, sort_keys=True).encode()


def _members(ref: InputRef, raw_sha256: str, cloud: Cloud) -> list[tuple[str, bytes]]:
    """The (suffix, bytes) tar members of one sample, in the order they are written."""
    members = [("points.npy", _npy_bytes(cloud.points))]
    if cloud.parts is not None:
        members.append(("parts.npy", _npy_bytes(cloud.parts)))
    members.append(("json", _metadata(ref, raw_sha256, cloud)))
    return members


def _fingerprint(ref: InputRef, loaded: Loaded, cloud: Cloud) -> tuple[str, str, str, np.ndarray]:
    """The sidecar row of a sample: exact fingerprint of its decoded geometry (Z-up, as stored), descriptor
    of its stored points."""
    return ref.key, ref.source, geometry_fingerprint(loaded.geometry, loaded.y_up), shape_descriptor(cloud.points)


def _sample_all(refs: list[InputRef], job: ShardJob, shard: str
                ) -> tuple[dict[str, list[tuple[str, bytes]]], dict[str, tuple], list[dict]]:
    """Load, sample and fingerprint every ref; returns (key -> its tar members), (key -> its fingerprint
    row) and the failure records."""
    by_source: dict[str, list[InputRef]] = defaultdict(list)
    for ref in refs:
        by_source[ref.source].append(ref)
    samples: dict[str, list[tuple[str, bytes]]] = {}
    fingerprints: dict[str, tuple] = {}
    failures: list[dict] = []
    for source, source_refs in by_source.items():
        spec = job.sources.get(source)
        if spec is None:
            failures += [failure_record(r, "load", f"source {source!r} is not in this job", shard) for r in source_refs]
            continue
        reader = make_reader(spec)
        reader.limits = job.limits
        try:
            for ref, loaded in reader.load(source_refs):
                if isinstance(loaded, Exception):
                    failures.append(failure_record(ref, _stage(loaded, "load"), _reason(loaded), shard))
                    continue
                try:
                    with time_limit(job.limits.time_s):
                        cloud = make_points(loaded, ref.key, job.sample)
                        fingerprints[ref.key] = _fingerprint(ref, loaded, cloud)
                except Exception as err:
                    failures.append(failure_record(ref, _stage(err, "sample"), _reason(err), shard))
                    continue
                samples[ref.key] = _members(ref, loaded.raw_sha256, cloud)
        finally:
            reader.close()
    return samples, fingerprints, failures


def _stage(err: Exception, default: str) -> str:
    return err.stage if isinstance(err, ShapeError) else default


def _reason(err: Exception) -> str:
    return err.reason if isinstance(err, ShapeError) else f"{type(err).__name__}: {err}"


def build_shard(shard: str, refs: list[InputRef], job: ShardJob) -> dict:
    """Write `shard` unless it is already finished; return its completion record."""
    out = Output(job.output, job.storage_options)
    record = finished_record(out, shard, job)
    if record is not None:
        return {**record, "skipped": True}
    start = time.perf_counter()
    samples, fingerprints, failures = _sample_all(refs, job, shard)
    counts: dict[str, Counter] = defaultdict(Counter)
    for ref in refs:
        counts[ref.source]["inputs"] += 1
        counts[ref.source]["samples" if ref.key in samples else "failed"] += 1
    path = out.scratch_file(shard)
    try:
        with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:  # PAX: keys longer than 100 chars
            for ref in refs:  # plan order; the members of a sample adjacent, as WebDataset needs
                for suffix, data in samples.get(ref.key, ()):
                    _add_member(tar, f"{ref.key}.{suffix}", data)
        sha = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                sha.update(block)
        filesize = os.path.getsize(path)
        out.publish_file(str(path), shard)
    finally:
        path.unlink(missing_ok=True)
    rows = [fingerprints[ref.key] for ref in refs if ref.key in samples]  # tar order
    out.publish_bytes(ShardFingerprints.from_rows(rows).to_bytes(), sidecar_name(shard))
    record = {
        "shard": shard,
        "nsamples": len(samples),
        "ninputs": len(refs),
        "filesize": filesize,
        "sha256": sha.hexdigest(),
        "sources": {s: dict(c) for s, c in sorted(counts.items())},
        "failures": failures,
        "plan_hash": job.plan_hash,
        "config_hash": job.config_hash,
        "seconds": round(time.perf_counter() - start, 3),
    }
    out.publish_json(record, done_name(shard))
    return {**record, "skipped": False}
