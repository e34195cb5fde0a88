"""The training input stream: manifests -> global order -> shards -> multi-crop -> fixed-shape batches.

Each DataLoader worker builds whole batches for the steps `EpochOrder.worker_batches` gives it, so a
rank receives its batches in step order whatever the number of workers, and every rank the same
number. A sample's crops depend only on (seed, epoch, global position): its random generator is
seeded from those three numbers, so every worker and rank draws its own stream (the reference's
workers share one), and a resumed run reproduces the very crops an uninterrupted one would have made.

Faults: a shard that cannot be used (`ShardError`) either stops the run (`on_shard_error: stop`) or
is skipped (`skip`): its samples in a batch are replaced by copies of other samples of that batch,
so shapes stay fixed, and they are counted in `Batch.skipped`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from model.asymdsd import CropBatch, MultiCropBatch
from pipeline.crops import Crops, MultiCropSpec, multi_crop
from pipeline.manifest import Manifest, load_manifest
from pipeline.order import DatasetShards, EpochOrder, LoaderState, SampleRefs
from pipeline.patchify import patch_indices
from pipeline.shards import ReadPolicy, ShardError, ShardStore


@dataclass(frozen=True)
class DatasetSource:
    url: str  # dataset directory or manifest.json, local or s3://
    weight: float = 1.0
    split: str = "train"
    storage_options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class PatchSpec:
    """Loader-side FPS + kNN; `LoaderConfig.patches = None` leaves it to the model on the GPU.

    The loader is the default by measurement (BENCHMARKS.md): on one CPU core its compiled patchify
    costs ~0.75 ms/sample against ~6.2 ms/sample for the model's torch code, and it keeps GPU step time
    for the model, as the reference does. The counts must match the model config's `patchify` section.
    """

    global_patches: int = 64
    local_patches: int = 16
    patch_size: int = 32


@dataclass(frozen=True)
class LoaderConfig:
    datasets: tuple[DatasetSource, ...]
    crops: MultiCropSpec = MultiCropSpec()
    seed: int = 0
    block_shards: int = 8
    patches: PatchSpec | None = PatchSpec()
    on_shard_error: Literal["skip", "stop"] = "skip"
    read: ReadPolicy = ReadPolicy()


@dataclass
class Batch:
    """One rank's batch of one step, ready for `model.AsymDSD` (`crops`)."""

    step: int
    crops: MultiCropBatch
    positions: torch.Tensor  # (b,) global positions in the epoch order
    padding: int  # wrap-around repeats in this batch
    skipped: int  # samples replaced because their shard was unusable
    load_seconds: float  # worker time spent building the batch

    def pin_memory(self) -> Batch:
        """Called by the DataLoader's pinning thread (pin_memory=True)."""
        return Batch(self.step, _map_crops(self.crops, torch.Tensor.pin_memory), self.positions.pin_memory(),
                     self.padding, self.skipped, self.load_seconds)


def _map_crops(batch: MultiCropBatch, fn) -> MultiCropBatch:
    def one(c: CropBatch | None) -> CropBatch | None:
        if c is None:
            return None
        return CropBatch(*(None if t is None else fn(t) for t in (c.points, c.num_points, c.center_idx, c.patch_idx)))

    return MultiCropBatch(one(batch.global_crops), one(batch.local_crops))


def sample_rng(seed: int, epoch: int, position: int) -> np.random.Generator:
    """The augmentation stream of one sample: a pure function of (seed, epoch, global position)."""
    return np.random.Generator(np.random.PCG64([seed, epoch, position]))


class MultiCropStream(IterableDataset):
    """Yields this rank's `Batch`es for one epoch, from `start_step`, split across DataLoader workers."""

    def __init__(self, cfg: LoaderConfig, manifests: list[Manifest], order: EpochOrder, rank: int, world: int,
                 start_step: int = 0) -> None:
        self.cfg, self.manifests, self.order = cfg, manifests, order
        self.rank, self.world, self.start_step = rank, world, start_step

    def __iter__(self):
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        stores = [ShardStore(self.cfg.read, d.storage_options) for d in self.cfg.datasets]
        bad_shards: dict[tuple[int, int], ShardError] = {}
        try:
            for step, refs in self.order.worker_batches(self.rank, self.world, worker, num_workers, self.start_step):
                yield self._batch(step, refs, stores, bad_shards)
        finally:
            for store in stores:
                store.close()

    def _load(self, refs: SampleRefs, i: int, stores: list[ShardStore],
              bad_shards: dict[tuple[int, int], ShardError]) -> np.ndarray | None:
        d, s = int(refs.dataset[i]), int(refs.shard[i])
        if (d, s) in bad_shards:
            return None
        try:
            return stores[d].sample(self.manifests[d].shards[s], int(refs.index[i])).points
        except ShardError as err:
            if self.cfg.on_shard_error == "stop":
                raise
            bad_shards[(d, s)] = err
            print(f"[pipeline] skipping {err}", flush=True)
            return None

    def _batch(self, step: int, refs: SampleRefs, stores: list[ShardStore],
               bad_shards: dict[tuple[int, int], ShardError]) -> Batch:
        start = time.perf_counter()
        cfg = self.cfg
        crops: list[tuple[_SampleCrops, _SampleCrops | None] | None] = []
        for i in range(len(refs)):
            points = self._load(refs, i, stores, bad_shards)
            if points is None:
                crops.append(None)
                continue
            rng = sample_rng(cfg.seed, self.order.epoch, int(refs.position[i]))
            g, loc = multi_crop(points.astype(np.float32, copy=False), cfg.crops, rng)
            p = cfg.patches
            crops.append((
                _prepare(g, p and p.global_patches, p.patch_size if p else 0, rng),
                None if loc is None else _prepare(loc, p and p.local_patches, p.patch_size if p else 0, rng),
            ))
        good = [c for c in crops if c is not None]
        if not good:
            raise RuntimeError(f"step {step}: every sample of rank {self.rank}'s batch comes from unusable shards: "
                               f"{sorted(str(e) for e in bad_shards.values())}")
        skipped = len(crops) - len(good)
        filled = [c if c is not None else good[i % len(good)] for i, c in enumerate(crops)]
        batch = MultiCropBatch(_stack([c[0] for c in filled]),
                               None if filled[0][1] is None else _stack([c[1] for c in filled]))
        return Batch(step, batch, torch.from_numpy(refs.position.copy()), int(refs.is_padding.sum()), skipped,
                     time.perf_counter() - start)


@dataclass
class _SampleCrops:
    """One kind of crops of one sample, with the loader-side patch indices when those are on."""

    points: np.ndarray  # (count, n, 3)
    num_points: np.ndarray  # (count,)
    center_idx: np.ndarray | None = None  # (count, P)
    patch_idx: np.ndarray | None = None  # (count, P, K)


def _prepare(crops: Crops, num_patches: int | None, patch_size: int, rng: np.random.Generator) -> _SampleCrops:
    if num_patches is None:
        return _SampleCrops(crops.points, crops.num_points)
    center_idx, patch_idx = patch_indices(crops, num_patches, patch_size, rng)
    return _SampleCrops(crops.points, crops.num_points, center_idx, patch_idx)


def _stack(crops: list[_SampleCrops]) -> CropBatch:
    def stacked(name: str, dtype=None) -> torch.Tensor:
        array = np.stack([getattr(c, name) for c in crops])
        return torch.from_numpy(array if dtype is None else array.astype(dtype))

    if crops[0].center_idx is None:
        return CropBatch(stacked("points"), stacked("num_points", np.int64))
    return CropBatch(stacked("points"), stacked("num_points", np.int64), stacked("center_idx", np.int64),
                     stacked("patch_idx", np.int64))


def load_manifests(cfg: LoaderConfig) -> list[Manifest]:
    return [load_manifest(d.url, d.storage_options, d.split) for d in cfg.datasets]


def epoch_order(cfg: LoaderConfig, manifests: list[Manifest], epoch: int, global_batch: int) -> EpochOrder:
    datasets = [DatasetShards(tuple(s.nsamples for s in m.shards), d.weight)
                for m, d in zip(manifests, cfg.datasets)]
    return EpochOrder(datasets, cfg.seed, epoch, global_batch, cfg.block_shards)


def make_loader(cfg: LoaderConfig, manifests: list[Manifest], epoch: int, global_batch: int, rank: int, world: int,
                num_workers: int = 0, state: LoaderState | None = None, pin_memory: bool = False
                ) -> tuple[DataLoader, EpochOrder]:
    """A DataLoader over one epoch for this rank; with `state`, it resumes after the consumed steps."""
    order = epoch_order(cfg, manifests, epoch, global_batch)
    start_step = order.resume_step(state) if state is not None else 0
    stream = MultiCropStream(cfg, manifests, order, rank, world, start_step)
    loader = DataLoader(stream, batch_size=None, num_workers=num_workers, pin_memory=pin_memory,
                        persistent_workers=False, prefetch_factor=2 if num_workers else None)
    return loader, order
