"""Streaming plan: which input goes into which shard.

Listing streams every source's refs into a JSON-lines file on local disk (`Output.plan_dir`, the
output's staging area) while keeping only three small arrays in memory (a 64-bit hash of each key,
its split and its file offset: 18 bytes per input, ~17 MB for 930K inputs). Within a split, inputs
are ordered by key hash, so the assignment depends only on the *set* of keys, not on listing order or
the number of workers, and cut into ceil(n / shard_size) consecutive shards whose sizes differ by at
most one.

A key that occurs twice is planned once; the later occurrence becomes a failure at stage 'plan'.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sharding.limits import Limits
from sharding.records import InputRef, sanitize_id
from sharding.sources import SourceSpec, make_reader


def key_hash(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")


@dataclass(frozen=True, eq=False)  # holds an array: compare by identity
class ShardPlan:
    name: str  # "<split>-<index:06d>.tar"
    split: str
    index: int
    offsets: np.ndarray  # plan-file offsets of its refs, in shard order (int64)


@dataclass
class Plan:
    refs_path: Path
    total_inputs: int
    shards: list[ShardPlan]
    failures: list[dict] = field(default_factory=list)  # plan-stage failures (duplicate keys)
    plan_hash: str = ""

    def refs(self, shard: ShardPlan) -> list[InputRef]:
        with open(self.refs_path, "rb") as f:
            return [_read_ref(f, int(offset)) for offset in shard.offsets]


def _read_ref(f, offset: int) -> InputRef:
    f.seek(offset)
    return InputRef.from_json(f.readline().decode())


def shard_sizes(n: int, shard_size: int) -> list[int]:
    """Balanced sizes: ceil(n / shard_size) shards, differing by at most one, summing to n."""
    if n == 0:
        return []
    count = math.ceil(n / shard_size)
    base, extra = divmod(n, count)
    return [base + 1 if i < extra else base for i in range(count)]


def list_refs(
    sources: list[SourceSpec], refs_path: Path, progress: Callable[[int], None] | None = None,
    limits: Limits = Limits(),
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Stream all refs to `refs_path` (files read within `limits`); return (hashes, split ids, offsets, split names)."""
    hashes: list[np.ndarray] = []
    splits: list[np.ndarray] = []
    offsets: list[np.ndarray] = []
    split_names: dict[str, int] = {}
    chunk_h, chunk_s, chunk_o = [], [], []

    def flush() -> None:
        hashes.append(np.array(chunk_h, dtype=np.uint64))
        splits.append(np.array(chunk_s, dtype=np.uint16))
        offsets.append(np.array(chunk_o, dtype=np.int64))
        chunk_h.clear(), chunk_s.clear(), chunk_o.clear()

    with open(refs_path, "wb") as f:
        for spec in sources:
            reader = make_reader(spec)
            reader.limits = limits
            try:
                for ref in reader.list_inputs():
                    chunk_o.append(f.tell())
                    f.write(ref.to_json().encode() + b"\n")
                    chunk_h.append(key_hash(ref.key))
                    chunk_s.append(split_names.setdefault(ref.split, len(split_names)))
                    if len(chunk_h) == 65536:
                        flush()
                        if progress:
                            progress(65536)
            finally:
                reader.close()
        remaining = len(chunk_h)
        flush()
        if progress and remaining:
            progress(remaining)
    return np.concatenate(hashes), np.concatenate(splits), np.concatenate(offsets), list(split_names)


def build_plan(
    sources: list[SourceSpec], shard_size: int, workdir: Path, progress: Callable[[int], None] | None = None,
    limits: Limits = Limits(),
) -> Plan:
    refs_path = workdir / "refs.jsonl"
    hashes, split_ids, offsets, split_names = list_refs(sources, refs_path, progress, limits)
    total = len(hashes)
    failures: list[dict] = []
    shards: list[ShardPlan] = []
    digest = hashlib.sha256(f"shard_size={shard_size}".encode())
    with open(refs_path, "rb") as f:
        for split_id, split in sorted(enumerate(split_names), key=lambda t: t[1]):
            idx = np.flatnonzero(split_ids == split_id)
            # Order by key hash; equal hashes (duplicate keys, or a 2^-64 collision) by listing order.
            order = idx[np.lexsort((offsets[idx], hashes[idx]))]
            keep = _drop_duplicates(f, order, hashes, offsets, failures)
            digest.update(split.encode() + hashes[keep].tobytes())
            start = 0
            for i, size in enumerate(shard_sizes(len(keep), shard_size)):
                part = keep[start : start + size]
                shards.append(ShardPlan(f"{sanitize_id(split)}-{i:06d}.tar", split, i, offsets[part]))
                start += size
    return Plan(refs_path, total, shards, failures, digest.hexdigest())


def _drop_duplicates(f, order: np.ndarray, hashes: np.ndarray, offsets: np.ndarray, failures: list[dict]) -> np.ndarray:
    """Indices of `order` without repeated keys; each repeat is recorded as a plan-stage failure."""
    if len(order) < 2:
        return order
    same = np.flatnonzero(hashes[order][1:] == hashes[order][:-1]) + 1
    if len(same) == 0:
        return order
    drop = set()
    for pos in same:
        first = _read_ref(f, int(offsets[order[pos - 1]]))
        ref = _read_ref(f, int(offsets[order[pos]]))
        if ref.key == first.key:
            drop.add(int(pos))
            failures.append(failure_record(ref, "plan", f"duplicate key {ref.key} (also {input_path(first)})"))
    return np.delete(order, sorted(drop))


def input_path(ref: InputRef) -> str:
    """Where an input came from: the container, and the member inside it when there is one."""
    path = f"{ref.container}!{ref.member}" if ref.member else ref.container
    return f"{path}#{ref.index}" if ref.index is not None else path


def failure_record(ref: InputRef, stage: str, reason: str, shard: str | None = None) -> dict:
    return {"key": ref.key, "source": ref.source, "path": input_path(ref), "stage": stage, "reason": reason,
            "shard": shard}
