"""Deterministic global sample order: which sample every (rank, worker, step) reads, as a pure function.

Why: splitting shards per rank (WebDataset) gives ranks unequal sample counts, which hangs DDP at the end
of an epoch, and cannot resume mid-epoch. As in MosaicML Streaming, the order here depends only on
(seed, epoch), the datasets' shard sizes, excluded samples and weights, and `block_shards`. Ranks and
workers only choose which slice of it to read, so the resume state is tiny and the world size may change
across restarts.

Samples a manifest excludes (duplicates, copies of test shapes) are never selected: below, the samples of a
dataset or shard are its kept ones, and a shard with none kept has no visit.

Design, per epoch (G = global batch, samples per optimizer micro-step over all ranks):
1. Mixture. Dataset d with n_d samples and weight w_d contributes m_d = floor(w_d * n_d + 1/2) samples (round
   half up). That is q = m_d // n_d full passes over every sample, plus r = m_d % n_d distinct samples
   drawn uniformly without replacement from the random stream (seed, epoch, d). So weight 1 is one pass,
   0.5 a random half that changes each epoch, and 2.0 every sample exactly twice.
2. Shard visits. Each full pass over a shard, and each shard's part of the random remainder, is one *visit*:
   a run of samples of one shard (empty visits are dropped). Repeats of a shard are separate visits, placed
   independently (usually in different blocks) rather than next to each other.
3. Shuffle with locality. The visits of all datasets are permuted together and cut into blocks of
   `block_shards` visits; then the samples within each block are permuted. Consecutive samples inside a block
   come from at most `block_shards` shards, so a reader streams or caches a few whole shards at a time, yet a
   batch mixes samples of all the shards in its block.
4. Padding. The T selected samples are padded by wrapping around to num_steps * G, num_steps = ceil(T / G).
   Padded positions (>= T) are real samples read again. They are flagged `is_padding` so the trainer can count
   them.
5. Ranks. Step k covers global positions [kG, (k+1)G). Rank r of W reads [kG + rG/W, kG + (r+1)G/W). So every
   rank reads exactly G/W samples per step by construction, and after k steps positions [0, kG) have been
   consumed whatever W is.
6. Workers. DataLoader worker w of n_w produces the rank's batches j = w, w + n_w, ..., where j counts from
   the first step of this run. PyTorch's DataLoader fetches round-robin from its workers, so the rank
   receives j = 0, 1, 2, ...
7. Resume. `LoaderState(seed, epoch, samples_consumed, global_batch, fingerprint)`. samples_consumed is a
   multiple of G, so a restart with the same G and any W dividing G continues at step samples_consumed / G
   with exactly the batches an uninterrupted run would have read. The fingerprint (shard sizes, excluded
   samples, weights, block_shards) catches a changed manifest or mixture, which would silently change the
   order; with nothing excluded it is the same as before exclusions existed.

Randomness comes from the raw output of the PCG64 bit generator, turned into permutations by a stable argsort.
Bit-generator streams are fixed across NumPy versions; `Generator` methods such as `permutation` are not. So a
run resumes exactly even after an upgrade. Everything is vectorised numpy over int32/int64 arrays: an epoch of
1M samples builds in about 0.15 s on a 2-core VM (tests/pipeline/test_order.py).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from itertools import chain

import numpy as np
from numpy.typing import NDArray

# Independent random streams per epoch, mixed into the seed so that changing one stage never shifts another.
_MIXTURE_STREAM = 0
_VISIT_STREAM = 1
_SAMPLE_STREAM = 2


class OrderError(ValueError):
    """Invalid order parameters, rank/worker arguments or resume state; the message says which and why."""


@dataclass(frozen=True)
class DatasetShards:
    """One dataset: its shards' sample counts in manifest order, its mixing weight (1 = one pass over the
    kept samples), and per shard the indices (tar order, increasing) of the samples never to select."""

    sizes: tuple[int, ...]
    weight: float = 1.0
    excluded: tuple[tuple[int, ...], ...] = ()

    def __post_init__(self) -> None:
        sizes = tuple(int(s) for s in self.sizes)
        negative = [i for i, s in enumerate(sizes) if s < 0]
        if negative:
            raise OrderError(f"shard sizes must be >= 0: shard {negative[0]} has {sizes[negative[0]]}")
        if not (math.isfinite(self.weight) and self.weight >= 0):
            raise OrderError(f"dataset weight must be finite and >= 0, got {self.weight}")
        excluded = tuple(tuple(map(int, e)) for e in self.excluded)
        if excluded and len(excluded) != len(sizes):
            raise OrderError(f"excluded samples are given for {len(excluded)} shards, the dataset has "
                             f"{len(sizes)}")
        object.__setattr__(self, "sizes", sizes)
        object.__setattr__(self, "excluded", excluded if any(excluded) else ())  # () when none
        object.__setattr__(self, "_excluded_at", _excluded_positions(np.asarray(sizes, np.int64), excluded))

    @property
    def excluded_positions(self) -> NDArray[np.int64]:
        """The excluded samples as increasing positions in the dataset's samples, numbered shard by shard."""
        return self._excluded_at  # type: ignore[attr-defined]  # set in __post_init__

    @property
    def num_samples(self) -> int:
        """The kept samples: those an epoch selects from."""
        return sum(self.sizes) - len(self.excluded_positions)

    @property
    def num_selected(self) -> int:
        """Samples this dataset contributes per epoch: weight * kept samples, rounded half up."""
        return math.floor(self.weight * self.num_samples + 0.5) if self.num_samples else 0


@dataclass(frozen=True)
class SampleRefs:
    """A run of global positions and the samples there, as parallel arrays (views; do not modify)."""

    position: NDArray[np.int64]
    dataset: NDArray[np.int32]
    shard: NDArray[np.int32]
    index: NDArray[np.int32]  # sample index within its shard, in the shard's (tar) order
    is_padding: NDArray[np.bool_]  # wrap-around repeats, to be counted by the trainer

    def __len__(self) -> int:
        return len(self.position)


@dataclass(frozen=True)
class LoaderState:
    """All that resuming an epoch mid-way needs: a few integers, kept in the checkpoint's client state."""

    seed: int
    epoch: int
    samples_consumed: int
    global_batch: int
    fingerprint: str  # of the datasets (sizes, exclusions, weights) and block_shards (EpochOrder.fingerprint)

    def __post_init__(self) -> None:
        for name in ("seed", "epoch", "samples_consumed", "global_batch"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise OrderError(f"loader state: {name} must be an int >= 0, got {value!r}")
        if not isinstance(self.fingerprint, str):
            raise OrderError(f"loader state: fingerprint must be a str, got {self.fingerprint!r}")
        if self.global_batch == 0:
            raise OrderError("loader state: global_batch must be > 0")
        if self.samples_consumed % self.global_batch:
            raise OrderError(
                f"loader state: samples_consumed={self.samples_consumed} is not a multiple of "
                f"global_batch={self.global_batch}; only whole optimizer steps can be resumed"
            )

    @property
    def step(self) -> int:
        """The first step not yet consumed."""
        return self.samples_consumed // self.global_batch

    def to_dict(self) -> dict[str, int | str]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> LoaderState:
        names = [f.name for f in fields(cls)]
        missing = [n for n in names if n not in data]
        if missing:
            raise OrderError(f"loader state: missing keys {missing} (got {sorted(data)})")
        return cls(**{n: data[n] for n in names})  # type: ignore[arg-type]  # checked in __post_init__


def _excluded_positions(sizes: NDArray[np.int64], excluded: Sequence[Sequence[int]]) -> NDArray[np.int64]:
    """Per-shard excluded indices as positions in the dataset (shard starts + index), checked: each index is
    one of its shard's samples, and a shard's indices increase."""
    counts = np.fromiter(map(len, excluded), np.int64, len(excluded))
    index = np.fromiter(chain.from_iterable(excluded), np.int64, int(counts.sum()))
    shard = np.repeat(np.arange(len(excluded)), counts)
    outside = np.flatnonzero((index < 0) | (index >= sizes[shard]))
    if len(outside):
        s, i = shard[outside[0]], index[outside[0]]
        raise OrderError(f"shard {s}: excluded index {i} is not one of its {sizes[s]} samples")
    unordered = np.flatnonzero((shard[1:] == shard[:-1]) & (index[1:] <= index[:-1]))
    if len(unordered):
        j = unordered[0]
        raise OrderError(
            f"shard {shard[j]}: excluded indices must increase, got {index[j]} then {index[j + 1]}"
        )
    return (np.cumsum(sizes) - sizes)[shard] + index


def _random_bits(entropy: Sequence[int], n: int) -> NDArray[np.uint64]:
    """n raw 64-bit draws from PCG64: a stream NumPy keeps fixed across versions."""
    return np.random.PCG64(np.random.SeedSequence(list(entropy))).random_raw(n)


def _permutation(entropy: Sequence[int], n: int) -> NDArray[np.int64]:
    """A uniform permutation of range(n); ties of the random keys are broken by index (deterministic)."""
    return np.argsort(_random_bits(entropy, n), kind="stable")


def _random_subset(entropy: Sequence[int], n: int, k: int) -> NDArray[np.int64]:
    """k distinct indices of range(n), uniform, sorted: those with the k smallest random keys.

    A partition finds the k-th smallest key in O(n); keys equal to it (practically never) are taken in index
    order, so the result does not depend on the partition algorithm.
    """
    if k == 0:
        return np.empty(0, np.int64)
    keys = _random_bits(entropy, n)
    kth = np.partition(keys, k - 1)[k - 1]
    taken = keys < kth
    taken[np.flatnonzero(keys == kth)[: k - int(taken.sum())]] = True
    return np.flatnonzero(taken)


def _select(
    sizes: NDArray[np.int64], excluded: NDArray[np.int64], num_selected: int, entropy: Sequence[int]
) -> tuple[NDArray[np.int32], NDArray[np.int32], NDArray[np.int64]]:
    """One dataset's selected samples in canonical order: (shard, index, visit), visits numbered from 0.

    The n kept samples are those not at the `excluded` positions (`DatasetShards.excluded_positions`).
    q = num_selected // n full passes, each shard with kept samples a visit per pass, then the random
    remainder r, grouped by shard (one visit per shard it touches) in index order.
    """
    if num_selected == 0:
        empty = np.empty(0, np.int32)
        return empty, empty, np.empty(0, np.int64)
    total = int(sizes.sum())
    shard = np.repeat(np.arange(len(sizes), dtype=np.int32), sizes)
    index = (np.arange(total, dtype=np.int64) - (np.cumsum(sizes) - sizes)[shard]).astype(np.int32)
    kept_sizes = sizes
    if len(excluded):
        kept = np.ones(total, bool)
        kept[excluded] = False
        shard, index = shard[kept], index[kept]
        kept_sizes = np.bincount(shard, minlength=len(sizes))
    n = len(shard)
    passes, remainder = divmod(num_selected, n)
    nonempty = np.flatnonzero(kept_sizes)
    visit = np.repeat(np.arange(len(nonempty), dtype=np.int64), kept_sizes[nonempty])

    chosen = _random_subset(entropy, n, remainder)
    rest_shard = shard[chosen]
    new_visit = np.empty(remainder, bool)
    new_visit[:1] = True
    new_visit[1:] = rest_shard[1:] != rest_shard[:-1]
    rest_visit = passes * len(nonempty) + np.cumsum(new_visit) - 1

    pass_offsets = np.repeat(np.arange(passes, dtype=np.int64) * len(nonempty), n)
    return (
        np.concatenate([np.tile(shard, passes), rest_shard]),
        np.concatenate([np.tile(index, passes), index[chosen]]),
        np.concatenate([np.tile(visit, passes) + pass_offsets, rest_visit]),
    )


def _block_shuffle(
    visit: NDArray[np.int64], num_visits: int, block_shards: int, seed: int, epoch: int
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Permute visits, cut them into blocks of `block_shards`, permute samples within blocks.

    Returns (order, block_bounds): order[p] is the canonical sample at position p, block b covers positions
    [block_bounds[b], block_bounds[b+1]). One stable argsort of (block, random key) does the within-block
    shuffle for all blocks at once.
    """
    visit_pos = np.empty(num_visits, np.int64)
    visit_pos[_permutation((seed, epoch, _VISIT_STREAM, 0), num_visits)] = np.arange(num_visits)
    num_blocks = -(-num_visits // block_shards)
    block = visit_pos[visit] // block_shards
    block_bits = max(1, (num_blocks - 1).bit_length())
    keys = (block.astype(np.uint64) << np.uint64(64 - block_bits)) | (
        _random_bits((seed, epoch, _SAMPLE_STREAM, 0), len(visit)) >> np.uint64(block_bits)
    )
    order = np.argsort(keys, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(block, minlength=num_blocks))])
    return order, bounds


def _fingerprint(datasets: Sequence[DatasetShards], block_shards: int) -> str:
    """A short digest of everything besides (seed, epoch) that determines the order. A dataset's exclusions
    enter as a digest of their positions, and only when there are any, so that states saved before
    exclusions existed stay valid."""
    doc = {"datasets": [[list(d.sizes), d.weight] + _exclusion_digest(d) for d in datasets],
           "block_shards": block_shards}
    return hashlib.sha256(json.dumps(doc, separators=(",", ":")).encode()).hexdigest()[:16]


def _exclusion_digest(dataset: DatasetShards) -> list[str]:
    positions = dataset.excluded_positions
    return [hashlib.sha256(positions.astype("<i8").tobytes()).hexdigest()] if len(positions) else []


class EpochOrder:
    """The padded global sample order of one epoch, and the views that ranks and workers read from it."""

    num_samples: int  # T: samples the mixture selects this epoch, before padding
    num_steps: int  # ceil(T / global_batch)
    padding: int  # wrap-around positions that fill the last step
    block_bounds: NDArray[np.int64]  # block b covers positions [block_bounds[b], block_bounds[b + 1])
    fingerprint: str  # digest of the datasets and block_shards, checked on resume

    def __init__(
        self,
        datasets: Sequence[DatasetShards],
        seed: int,
        epoch: int,
        global_batch: int,
        block_shards: int = 8,
    ) -> None:
        if not datasets:
            raise OrderError("no datasets given")
        for name, value, least in (
            ("seed", seed, 0),
            ("epoch", epoch, 0),
            ("global_batch", global_batch, 1),
            ("block_shards", block_shards, 1),
        ):
            if not isinstance(value, (int, np.integer)) or value < least:
                raise OrderError(f"{name} must be an int >= {least}, got {value!r}")
        self.datasets = tuple(datasets)
        self.seed, self.epoch = int(seed), int(epoch)
        self.global_batch, self.block_shards = int(global_batch), int(block_shards)
        self.fingerprint = _fingerprint(self.datasets, self.block_shards)

        parts, num_visits = [], 0
        for d, ds in enumerate(self.datasets):
            sizes, excluded = np.asarray(ds.sizes, np.int64), ds.excluded_positions
            entropy = (self.seed, self.epoch, _MIXTURE_STREAM, d)
            shard, index, visit = _select(sizes, excluded, ds.num_selected, entropy)
            parts.append((np.full(len(shard), d, np.int32), shard, index, visit + num_visits))
            num_visits += int(visit[-1]) + 1 if len(visit) else 0
        dataset, shard, index, visit = (np.concatenate(arrays) for arrays in zip(*parts))
        if len(dataset) == 0:
            raise OrderError(f"the mixture selects no samples (datasets: {self._describe()})")

        order, self.block_bounds = _block_shuffle(visit, num_visits, self.block_shards, self.seed, self.epoch)
        self.num_samples = len(order)
        self.num_steps = -(-self.num_samples // self.global_batch)
        self.padding = self.num_steps * self.global_batch - self.num_samples
        if self.padding:
            order = np.concatenate([order, order[np.arange(self.padding) % self.num_samples]])
        self._dataset, self._shard, self._index = dataset[order], shard[order], index[order]

    def _describe(self) -> str:
        parts = []
        for d in self.datasets:
            excluded = f" ({len(d.excluded_positions)} excluded)" if d.excluded else ""
            parts.append(f"{len(d.sizes)} shards/{d.num_samples} samples{excluded} x {d.weight}")
        return ", ".join(parts)

    def _refs(self, start: int, stop: int) -> SampleRefs:
        position = np.arange(start, stop, dtype=np.int64)
        return SampleRefs(
            position=position,
            dataset=self._dataset[start:stop],
            shard=self._shard[start:stop],
            index=self._index[start:stop],
            is_padding=position >= self.num_samples,
        )

    def positions(self) -> SampleRefs:
        """The whole padded order: num_steps * global_batch positions."""
        return self._refs(0, self.num_steps * self.global_batch)

    def _check_rank(self, rank: int, world: int) -> int:
        """Validate (rank, world) and return the per-rank batch size G / W."""
        if world < 1 or self.global_batch % world:
            raise OrderError(
                f"global_batch={self.global_batch} must be divisible by the world size {world}, "
                f"so that every rank reads the same number of samples per step"
            )
        if not 0 <= rank < world:
            raise OrderError(f"rank {rank} out of range for world size {world}")
        return self.global_batch // world

    def rank_batch(self, step: int, rank: int, world: int) -> SampleRefs:
        """The G/W samples that rank `rank` of `world` reads at `step`: a contiguous slice of the step."""
        per_rank = self._check_rank(rank, world)
        if not 0 <= step < self.num_steps:
            raise OrderError(f"step {step} out of range: epoch {self.epoch} has {self.num_steps} steps")
        start = step * self.global_batch + rank * per_rank
        return self._refs(start, start + per_rank)

    def worker_batches(
        self, rank: int, world: int, worker: int, num_workers: int, start_step: int = 0
    ) -> Iterator[tuple[int, SampleRefs]]:
        """(step, refs) for the rank's batches that DataLoader worker `worker` of `num_workers` produces.

        Worker w takes steps start_step + w, start_step + w + num_workers, ...; counted from start_step
        because a (re)started DataLoader asks worker 0 first and then goes round-robin, so the rank receives
        its batches in step order.
        """
        self._check_rank(rank, world)
        if not 0 <= worker < num_workers:
            raise OrderError(f"worker {worker} out of range for {num_workers} workers")
        if not 0 <= start_step <= self.num_steps:
            raise OrderError(f"start_step {start_step} out of range: epoch has {self.num_steps} steps")
        for step in range(start_step + worker, self.num_steps, num_workers):
            yield step, self.rank_batch(step, rank, world)

    def state(self, steps_done: int) -> LoaderState:
        """The state to checkpoint after `steps_done` completed optimizer steps of this epoch."""
        if not 0 <= steps_done <= self.num_steps:
            raise OrderError(f"steps_done {steps_done} out of range: epoch has {self.num_steps} steps")
        return LoaderState(
            self.seed, self.epoch, steps_done * self.global_batch, self.global_batch, self.fingerprint
        )

    def resume_step(self, state: LoaderState) -> int:
        """Check that `state` was saved for this very order, and return the first step to read.

        Any world size dividing the global batch may resume; the global batch itself, the seed, the epoch
        and the datasets (fingerprint) must match, otherwise the saved position means different samples.
        """
        if state.global_batch != self.global_batch:
            raise OrderError(
                f"cannot resume: state saved with global_batch={state.global_batch}, this run uses "
                f"{self.global_batch}; the position of a step depends on the global batch, keep it fixed"
            )
        if (state.seed, state.epoch) != (self.seed, self.epoch):
            raise OrderError(
                f"cannot resume: state is for seed={state.seed} epoch={state.epoch}, this order is "
                f"seed={self.seed} epoch={self.epoch}"
            )
        if state.fingerprint != self.fingerprint:
            raise OrderError(
                f"cannot resume: datasets or block_shards changed since the state was saved (fingerprint "
                f"{state.fingerprint} != {self.fingerprint}; now {self._describe()}, "
                f"block_shards={self.block_shards})"
            )
        if state.step > self.num_steps:
            raise OrderError(
                f"cannot resume: samples_consumed={state.samples_consumed} is past the end of the epoch "
                f"({self.num_steps} steps of {self.global_batch})"
            )
        return state.step
