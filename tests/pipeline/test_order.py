"""The global sample order: exact-once, equal per-rank shares, determinism, locality, resume, mixture."""

from __future__ import annotations

import hashlib
from collections import Counter
from itertools import pairwise, zip_longest

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from pipeline.order import DatasetShards, EpochOrder, LoaderState, OrderError, SampleRefs

UNEVEN = (DatasetShards((10, 7, 3, 13)),)  # 33 samples
G = 8  # 5 steps, 7 padded positions


def keys(refs: SampleRefs) -> list[tuple[int, int, int]]:
    return list(zip(refs.dataset.tolist(), refs.shard.tolist(), refs.index.tolist()))


def all_samples(datasets: tuple[DatasetShards, ...]) -> set[tuple[int, int, int]]:
    return {(d, s, i) for d, ds in enumerate(datasets) for s, n in enumerate(ds.sizes) for i in range(n)}


Stream = list[tuple[int, SampleRefs]]


def rank_stream(order: EpochOrder, rank: int, world: int, start_step: int = 0) -> Stream:
    """What the rank should receive, step by step."""
    return [(s, order.rank_batch(s, rank, world)) for s in range(start_step, order.num_steps)]


def round_robin(streams: list[Stream]) -> Stream:
    """What a DataLoader yields: one item from each worker in turn, skipping exhausted workers."""
    return [item for group in zip_longest(*streams) for item in group if item is not None]


def global_sequence(order: EpochOrder, world: int, start_step: int = 0) -> list[tuple[int, int, int]]:
    """Keys in the order the whole job reads them: step by step, ranks in order."""
    steps = range(start_step, order.num_steps)
    return [k for s in steps for r in range(world) for k in keys(order.rank_batch(s, r, world))]


def test_exact_once_two_ranks_two_workers() -> None:
    order = EpochOrder(UNEVEN, seed=3, epoch=0, global_batch=G, block_shards=2)
    assert (order.num_samples, order.num_steps, order.padding) == (33, 5, 7)
    seen: list[tuple[int, int, int]] = []
    padded: list[tuple[int, int, int]] = []
    for rank in range(2):
        for worker in range(2):
            for _, refs in order.worker_batches(rank, 2, worker, 2):
                seen += [k for k, pad in zip(keys(refs), refs.is_padding) if not pad]
                padded += [k for k, pad in zip(keys(refs), refs.is_padding) if pad]
    assert len(seen) == len(set(seen)) == 33
    assert set(seen) == all_samples(UNEVEN)
    assert len(padded) == order.padding and set(padded) <= set(seen)


def test_equal_batches_per_rank_and_worker_streams_interleave() -> None:
    order = EpochOrder(UNEVEN, seed=3, epoch=0, global_batch=G, block_shards=2)
    for rank in range(2):
        expected = rank_stream(order, rank, 2)
        assert len(expected) == order.num_steps and all(len(refs) == G // 2 for _, refs in expected)
        streams = [list(order.worker_batches(rank, 2, w, 2)) for w in range(2)]
        assert [len(s) for s in streams] == [3, 2]  # 5 batches: workers differ by one, the rank does not
        merged = round_robin(streams)
        assert [s for s, _ in merged] == list(range(order.num_steps))
        assert [keys(r) for _, r in merged] == [keys(r) for _, r in expected]


class _Steps(IterableDataset):
    def __init__(self, order: EpochOrder, rank: int, world: int, start_step: int) -> None:
        self.order, self.rank, self.world, self.start_step = order, rank, world, start_step

    def __iter__(self):
        info = get_worker_info()
        batches = self.order.worker_batches(self.rank, self.world, info.id, info.num_workers, self.start_step)
        for step, refs in batches:
            yield step, torch.from_numpy(refs.position)


def test_torch_dataloader_delivers_steps_in_order() -> None:
    """The round-robin assumption, checked against PyTorch's DataLoader itself (also from a resume step)."""
    order = EpochOrder(UNEVEN, seed=3, epoch=0, global_batch=G, block_shards=2)
    for start_step in (0, 2):
        dataset = _Steps(order, 1, 2, start_step)
        loader = DataLoader(dataset, batch_size=None, num_workers=2, prefetch_factor=2)
        got = [(step, pos.tolist()) for step, pos in loader]
        assert got == [(s, r.position.tolist()) for s, r in rank_stream(order, 1, 2, start_step)]


def test_deterministic_and_independent_of_world_and_workers() -> None:
    a = EpochOrder(UNEVEN, seed=5, epoch=1, global_batch=G).positions()
    b = EpochOrder(UNEVEN, seed=5, epoch=1, global_batch=G).positions()
    assert keys(a) == keys(b)
    assert keys(a) != keys(EpochOrder(UNEVEN, seed=5, epoch=2, global_batch=G).positions())
    assert keys(a) != keys(EpochOrder(UNEVEN, seed=6, epoch=1, global_batch=G).positions())
    order = EpochOrder(UNEVEN, seed=5, epoch=1, global_batch=G)
    for world in (1, 2, 4, 8):
        assert global_sequence(order, world) == keys(a)
        for workers in (1, 3):
            streams = [list(order.worker_batches(0, world, w, workers)) for w in range(workers)]
            expected = [keys(r) for _, r in rank_stream(order, 0, world)]
            assert [keys(r) for _, r in round_robin(streams)] == expected


def test_world_must_divide_global_batch() -> None:
    order = EpochOrder(UNEVEN, seed=0, epoch=0, global_batch=G)
    with pytest.raises(OrderError, match="global_batch=8 must be divisible by the world size 3"):
        order.rank_batch(0, 0, 3)
    with pytest.raises(OrderError, match="divisible"):
        next(order.worker_batches(0, 3, 0, 1))
    with pytest.raises(OrderError, match="rank 2 out of range"):
        order.rank_batch(0, 2, 2)


def test_shuffle_mixes_samples_across_shards() -> None:
    datasets = (DatasetShards((10, 7, 3, 13)), DatasetShards((9, 11)))
    order = EpochOrder(datasets, seed=1, epoch=0, global_batch=G, block_shards=3)
    refs = order.positions()
    assert any(
        len(set(zip(refs.dataset[s : s + G], refs.shard[s : s + G]))) >= 2 for s in range(0, len(refs), G)
    )
    bounds, ordered = order.block_bounds, keys(refs)
    for lo, hi in pairwise(bounds):
        block = ordered[lo:hi]
        if len({k[:2] for k in block}) >= 2:
            assert block != sorted(block), "samples of a multi-shard block stay in shard order"
    orders = [EpochOrder(datasets, seed=1, epoch=e, global_batch=G, block_shards=1) for e in range(8)]
    first_shards = [o.positions().shard[0] for o in orders]
    assert len(set(first_shards)) >= 2, "shard order is not permuted across epochs"


def test_locality_blocks_touch_at_most_block_shards() -> None:
    rng = np.random.default_rng(0)
    datasets = (
        DatasetShards(tuple(rng.integers(20, 60, 30).tolist())),
        DatasetShards(tuple(rng.integers(1, 40, 17).tolist()), weight=0.6),
    )
    order = EpochOrder(datasets, seed=2, epoch=4, global_batch=16, block_shards=4)
    refs = order.positions()
    shard_id = refs.dataset[: order.num_samples].astype(np.int64) * 1000 + refs.shard[: order.num_samples]
    bounds = order.block_bounds
    assert bounds[0] == 0 and bounds[-1] == order.num_samples
    assert all(len(np.unique(shard_id[lo:hi])) <= 4 for lo, hi in pairwise(bounds))
    # A weight-1 shard is one visit: all its samples are consecutive within one block.
    first = shard_id < 1000
    block_of = np.searchsorted(bounds, np.arange(order.num_samples), side="right") - 1
    assert all(len(np.unique(block_of[first & (shard_id == s)])) == 1 for s in range(30))
    # Any window no longer than the smallest block spans at most two blocks, hence 2 * block_shards shards.
    window = int(np.diff(bounds).min())
    assert max(len(np.unique(shard_id[p : p + window])) for p in range(order.num_samples - window + 1)) <= 8


@pytest.mark.parametrize("resume_world", [4, 2, 8])
def test_resume_matches_uninterrupted_run(resume_world: int) -> None:
    datasets = (DatasetShards((10, 7, 3, 13, 21)), DatasetShards((5, 12), weight=1.5))
    order = EpochOrder(datasets, seed=11, epoch=3, global_batch=G, block_shards=2)
    k = 3
    saved = LoaderState.from_dict(dict(order.state(k).to_dict()))
    assert saved.samples_consumed == k * G
    restarted = EpochOrder(datasets, saved.seed, saved.epoch, G, block_shards=2)
    start = restarted.resume_step(saved)
    assert start == k
    assert global_sequence(restarted, resume_world, start) == global_sequence(order, 4)[k * G :]
    for rank in range(resume_world):
        streams = [list(restarted.worker_batches(rank, resume_world, w, 3, start)) for w in range(3)]
        assert [(s, keys(r)) for s, r in round_robin(streams)] == [
            (s, keys(r)) for s, r in rank_stream(order, rank, resume_world, k)
        ]
    # Interrupted + resumed run reads exactly the epoch's multiset of samples: no repeats, no gaps.
    before = global_sequence(order, 4)[: k * G]
    after = global_sequence(restarted, resume_world, start)
    assert Counter(before + after) == Counter(keys(order.positions()))


def test_resume_at_epoch_end_has_nothing_left() -> None:
    order = EpochOrder(UNEVEN, seed=0, epoch=0, global_batch=G)
    state = order.state(order.num_steps)
    assert order.resume_step(state) == order.num_steps
    assert list(order.worker_batches(0, 2, 0, 2, order.num_steps)) == []


def test_bad_states_are_rejected_clearly() -> None:
    order = EpochOrder(UNEVEN, seed=0, epoch=0, global_batch=G)
    good = order.state(2).to_dict()
    with pytest.raises(OrderError, match="samples_consumed=12 is not a multiple of global_batch=8"):
        LoaderState.from_dict({**good, "samples_consumed": 12})
    with pytest.raises(OrderError, match="state saved with global_batch=4, this run uses 8"):
        order.resume_step(LoaderState.from_dict({**good, "global_batch": 4}))
    with pytest.raises(OrderError, match="epoch=1"):
        order.resume_step(LoaderState.from_dict({**good, "epoch": 1}))
    with pytest.raises(OrderError, match="datasets or block_shards changed"):
        EpochOrder((DatasetShards((10, 7, 3, 14)),), 0, 0, G).resume_step(LoaderState.from_dict(good))
    with pytest.raises(OrderError, match="datasets or block_shards changed"):
        EpochOrder(UNEVEN, 0, 0, G, block_shards=4).resume_step(LoaderState.from_dict(good))
    with pytest.raises(OrderError, match="past the end"):
        order.resume_step(LoaderState.from_dict({**good, "samples_consumed": 6 * G}))
    with pytest.raises(OrderError, match="missing keys"):
        LoaderState.from_dict({k: v for k, v in good.items() if k != "fingerprint"})
    with pytest.raises(OrderError, match="seed must be an int"):
        LoaderState.from_dict({**good, "seed": "0"})


def test_mixture_counts_follow_weights() -> None:
    datasets = (
        DatasetShards((10, 7, 3, 13)),
        DatasetShards((9, 11, 5), weight=0.5),
        DatasetShards((4, 6), weight=2.0),
        DatasetShards((3, 4), weight=1.5),
        DatasetShards((5,), weight=0.0),
    )
    assert [d.num_selected for d in datasets] == [33, 13, 20, 11, 0]  # 12.5 and 10.5 round half up
    halves = []
    for epoch in range(3):
        order = EpochOrder(datasets, seed=9, epoch=epoch, global_batch=G)
        refs = order.positions()
        real = Counter(keys(refs)[: order.num_samples])
        per_dataset = Counter(d for d, _, _ in real.elements())
        assert [per_dataset[d] for d in range(5)] == [33, 13, 20, 11, 0]
        counts = [
            sorted(real[(d, s, i)] for s, n in enumerate(ds.sizes) for i in range(n))
            for d, ds in enumerate(datasets)
        ]
        assert counts[0] == [1] * 33
        assert counts[1] == [0] * 12 + [1] * 13  # a half is drawn without replacement
        assert counts[2] == [2] * 10
        assert counts[3] == [1] * 3 + [2] * 4
        halves.append(frozenset(k for k in real if k[0] == 1))
    assert len(set(halves)) == 3, "the random half should change with the epoch"


def test_empty_or_invalid_inputs() -> None:
    with pytest.raises(OrderError, match="selects no samples"):
        EpochOrder((DatasetShards((0, 0)), DatasetShards((4,), weight=0.0)), 0, 0, G)
    with pytest.raises(OrderError, match="shard 1 has -2"):
        DatasetShards((3, -2))
    with pytest.raises(OrderError, match="weight"):
        DatasetShards((3,), weight=float("nan"))
    with pytest.raises(OrderError, match="global_batch must be an int >= 1"):
        EpochOrder(UNEVEN, 0, 0, 0)


def test_padding_wraps_when_epoch_is_shorter_than_a_batch() -> None:
    order = EpochOrder((DatasetShards((2, 1)),), seed=0, epoch=0, global_batch=8)
    refs = order.positions()
    assert (order.num_steps, order.padding) == (1, 5)
    assert refs.is_padding.tolist() == [False] * 3 + [True] * 5
    assert keys(refs)[3:] == (keys(refs)[:3] * 2)[:5]


def test_one_million_samples_are_indexed_compactly() -> None:
    rng = np.random.default_rng(0)
    sizes = rng.integers(200, 290, 4000)
    sizes[-1] += 1_000_000 - sizes.sum()
    order = EpochOrder((DatasetShards(tuple(sizes.tolist())),), seed=0, epoch=0, global_batch=1024)
    assert order.num_samples == 1_000_000
    assert order.positions().index.dtype == np.int32


# Shard 2 of dataset 0 is wholly excluded; dataset 1 is read twice, dataset 2 one and a half times.
EXCLUDING = (
    DatasetShards((10, 7, 3, 13), excluded=((0, 4, 9), (), (0, 1, 2), (5,))),
    DatasetShards((6, 5), weight=2.0, excluded=((1,), (0, 4))),
    DatasetShards((4, 9, 2), weight=1.5, excluded=((3,), (2, 3, 7), ())),
)


def excluded_samples(datasets: tuple[DatasetShards, ...]) -> set[tuple[int, int, int]]:
    return {(d, s, i) for d, ds in enumerate(datasets) for s, ex in enumerate(ds.excluded) for i in ex}


def test_exclusions_are_never_read_and_kept_samples_follow_the_weights() -> None:
    kept = all_samples(EXCLUDING) - excluded_samples(EXCLUDING)
    assert [d.num_samples for d in EXCLUDING] == [26, 8, 11] and len(kept) == 45
    assert [d.num_selected for d in EXCLUDING] == [26, 16, 17]  # 16.5 rounds up
    order = EpochOrder(EXCLUDING, seed=4, epoch=2, global_batch=G, block_shards=3)
    assert (order.num_samples, order.num_steps, order.padding) == (59, 8, 5)
    for world in (1, 2, 4, 8):
        read: list[tuple[int, int, int]] = []
        for rank in range(world):
            for step in range(order.num_steps):
                refs = order.rank_batch(step, rank, world)
                assert len(refs) == G // world
                read += [k for k, pad in zip(keys(refs), refs.is_padding) if not pad]
                assert not set(keys(refs)) & excluded_samples(EXCLUDING)  # padding included
        counts = Counter(read)
        assert set(counts) == kept
        assert [counts[k] for k in sorted(kept) if k[0] == 0] == [1] * 26
        assert [counts[k] for k in sorted(kept) if k[0] == 1] == [2] * 8
        assert sorted(counts[k] for k in kept if k[0] == 2) == [1] * 5 + [2] * 6


def test_a_wholly_excluded_shard_gets_no_visit() -> None:
    # One visit per block: dataset 0 has 3 shards with kept samples, dataset 1 two shards read twice.
    order = EpochOrder(EXCLUDING[:2], seed=0, epoch=0, global_batch=G, block_shards=1)
    assert len(order.block_bounds) - 1 == 3 + 2 * 2 and np.all(np.diff(order.block_bounds) > 0)
    refs = order.positions()
    assert not np.any((refs.dataset == 0) & (refs.shard == 2))
    with pytest.raises(OrderError, match=r"selects no samples \(datasets: 2 shards/0 samples \(3 excluded\)"):
        EpochOrder((DatasetShards((2, 1), excluded=((0, 1), (0,))),), 0, 0, G)


def test_no_exclusions_leave_the_order_and_fingerprint_as_they_were() -> None:
    none = DatasetShards((10, 7, 3, 13), excluded=((), (), (), ()))
    assert none == UNEVEN[0] and none.excluded == () and none.num_samples == 33
    plain = EpochOrder(UNEVEN, seed=3, epoch=0, global_batch=G, block_shards=2)
    empty = EpochOrder((none,), seed=3, epoch=0, global_batch=G, block_shards=2)
    assert keys(plain.positions()) == keys(empty.positions()) and plain.fingerprint == empty.fingerprint
    # The values from before exclusions existed: saved states resume, and the order is the same.
    refs = plain.positions()
    digest = hashlib.sha256(np.stack([refs.dataset, refs.shard, refs.index]).astype("<i4").tobytes())
    assert (plain.fingerprint, digest.hexdigest()[:16]) == ("d42103869c9120cd", "b29725e90011349e")


def test_changed_exclusions_change_the_fingerprint_and_stop_a_resume() -> None:
    base = EpochOrder(EXCLUDING, seed=0, epoch=0, global_batch=G)
    state = LoaderState.from_dict(base.state(2).to_dict())
    one_more = (DatasetShards((10, 7, 3, 13), excluded=((0, 4, 9), (6,), (0, 1, 2), (5,))), *EXCLUDING[1:])
    moved = (DatasetShards((10, 7, 3, 13), excluded=((0, 4, 8), (), (0, 1, 2), (5,))), *EXCLUDING[1:])
    fewer = (DatasetShards((10, 7, 3, 13)), *EXCLUDING[1:])
    fingerprints = {EpochOrder(d, 0, 0, G).fingerprint for d in (EXCLUDING, one_more, moved, fewer)}
    assert len(fingerprints) == 4
    stale = r"datasets or block_shards changed .*4 shards/25 samples \(8 excluded\)"
    with pytest.raises(OrderError, match=stale):
        EpochOrder(one_more, 0, 0, G).resume_step(state)
    assert EpochOrder(EXCLUDING, 0, 0, G).resume_step(state) == 2


@pytest.mark.parametrize(
    ("excluded", "message"),
    [
        (((0,), ()), "excluded samples are given for 2 shards, the dataset has 3"),
        (((), (4,), ()), "shard 1: excluded index 4 is not one of its 4 samples"),
        (((-1,), (), ()), "shard 0: excluded index -1 is not one of its 3 samples"),
        (((), (2, 1), ()), "shard 1: excluded indices must increase, got 2 then 1"),
        (((), (), (1, 1)), "shard 2: excluded indices must increase, got 1 then 1"),
    ],
)
def test_invalid_exclusions_are_named(excluded: tuple[tuple[int, ...], ...], message: str) -> None:
    with pytest.raises(OrderError, match=message):
        DatasetShards((3, 4, 2), excluded=excluded)


def test_one_million_samples_with_100k_exclusions() -> None:
    rng = np.random.default_rng(0)
    sizes = rng.integers(200, 290, 4000)
    sizes[-1] += 1_000_000 - sizes.sum()
    starts = np.cumsum(sizes) - sizes
    excluded_at = np.sort(rng.choice(1_000_000, 100_000, replace=False))
    shard = np.searchsorted(starts, excluded_at, side="right") - 1
    bounds = np.searchsorted(shard, np.arange(len(sizes) + 1))
    excluded = tuple(tuple((excluded_at[a:b] - starts[s]).tolist())
                     for s, (a, b) in enumerate(pairwise(bounds)))
    dataset = DatasetShards(tuple(sizes.tolist()), excluded=excluded)
    order = EpochOrder((dataset,), seed=0, epoch=0, global_batch=1024)
    assert order.num_samples == 900_000
    refs = order.positions()
    read = starts[refs.shard[: order.num_samples]] + refs.index[: order.num_samples]
    assert len(np.unique(read)) == 900_000 and not np.isin(excluded_at, read).any()
