"""The training input stream: manifests -> global order -> shards -> multi-crop -> fixed-shape batches.

Each DataLoader worker builds whole batches for the steps `EpochOrder.worker_batches` gives it, so a
rank receives its batches in step order whatever the number of workers, and every rank the same
number. A sample's crops depend only on (seed, epoch, global position): its random generator is
seeded from those three numbers, so every worker and rank draws its own stream (the reference's
workers share one), and a resumed run reproduces the very crops an uninterrupted one would have made.

Faults: a shard that cannot be used (`ShardError`), or a sample whose points are not all finite
(`SampleError`: that sample alone, the rest of its shard is read), either stops the run
(`on_shard_error: stop`) or is skipped (`skip`) with one line naming it: its samples in a batch are
replaced by copies of other samples of that batch, so shapes stay fixed, and counted in `Batch.skipped`.
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from configuration.redact import redact_urls
from model.batch import CropBatch, MultiCropBatch
from model.config import PatchifyConfig
from pipeline.config import DataConfig
from pipeline.crops import Crops, multi_crop
from pipeline.manifest import Manifest, load_manifest
from pipeline.order import DatasetShards, EpochOrder, LoaderState, SampleRefs
from pipeline.patchify import patch_indices
from pipeline.shards import ShardError, ShardStore


@dataclass
class Batch:
    """One rank's batch of one step, ready for `model.AsymDSD` (`crops`)."""

    step: int
    crops: MultiCropBatch
    positions: torch.Tensor  # (b,) global positions in the epoch order
    padding: int  # wrap-around repeats in this batch
    skipped: int  # samples replaced because they or their shard were unusable
    load_seconds: float  # worker time spent building the batch
    retries: int = 0  # shard read retries while building it (ShardStore.retries_used)

    def pin_memory(self) -> Batch:
        """Called by the DataLoader's pinning thread (pin_memory=True)."""
        return Batch(self.step, self.crops.map(torch.Tensor.pin_memory), self.positions.pin_memory(),
                     self.padding, self.skipped, self.load_seconds, self.retries)


class SampleError(ShardError):
    """A sample that cannot be used in a shard that can (non-finite points); names the sample and shard."""

    def __init__(self, url: str, key: str, reason: str) -> None:
        super().__init__(url, f"sample {key}: {reason}")
        self.key = key


def finite_points(points: np.ndarray, url: str, key: str) -> np.ndarray:
    """`points`, or a `SampleError` when any coordinate is NaN or infinite (it would spoil a whole step)."""
    bad = points.size - np.count_nonzero(np.isfinite(points))
    if bad:
        raise SampleError(url, key, f"{bad} non-finite values in points.npy")
    return points


def sample_rng(seed: int, epoch: int, position: int) -> np.random.Generator:
    """The augmentation stream of one sample: a pure function of (seed, epoch, global position)."""
    return np.random.Generator(np.random.PCG64([seed, epoch, position]))


class MultiCropStream(IterableDataset):
    """Yields this rank's `Batch`es for one epoch, from `start_step`, split across DataLoader workers."""

    def __init__(self, data: DataConfig, patches: PatchifyConfig | None, seed: int, manifests: list[Manifest],
                 order: EpochOrder, rank: int, world: int, start_step: int = 0) -> None:
        self.data, self.patches, self.seed, self.manifests, self.order = data, patches, seed, manifests, order
        self.rank, self.world, self.start_step = rank, world, start_step

    def __iter__(self):
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        stores = [ShardStore(self.data.read, d.storage_options) for d in self.data.datasets]
        unusable: dict[tuple[int, ...], ShardError] = {}  # (dataset, shard) or (dataset, shard, sample)
        try:
            for step, refs in self.order.worker_batches(self.rank, self.world, worker, num_workers, self.start_step):
                yield self._batch(step, refs, stores, unusable)
        finally:
            for store in stores:
                store.close()

    def _load(self, refs: SampleRefs, i: int, stores: list[ShardStore],
              unusable: dict[tuple[int, ...], ShardError]) -> np.ndarray | None:
        """The points of sample `i` of `refs`, or None when it or its shard is unusable (skip policy)."""
        d, s, index = int(refs.dataset[i]), int(refs.shard[i]), int(refs.index[i])
        if (d, s) in unusable or (d, s, index) in unusable:
            return None
        shard = self.manifests[d].shards[s]
        try:
            sample = stores[d].sample(shard, index)
            return finite_points(sample.points, shard.url, sample.key)
        except ShardError as err:
            if self.data.on_shard_error == "stop":
                raise
            unusable[(d, s, index) if isinstance(err, SampleError) else (d, s)] = err
            print(f"[pipeline] skipping {redact_urls(str(err))}", flush=True)
            return None

    def _batch(self, step: int, refs: SampleRefs, stores: list[ShardStore],
               unusable: dict[tuple[int, ...], ShardError]) -> Batch:
        start, retries = time.perf_counter(), sum(s.retries_used for s in stores)
        p = self.patches
        crops: list[tuple[CropBatch, CropBatch | None] | None] = []
        for i in range(len(refs)):
            points = self._load(refs, i, stores, unusable)
            if points is None:
                crops.append(None)
                continue
            rng = sample_rng(self.seed, self.order.epoch, int(refs.position[i]))
            g, loc = multi_crop(points.astype(np.float32, copy=False), self.data, rng)
            crops.append((
                _sample_crops(g, p and p.global_patches, p.patch_size if p else 0, rng),
                None if loc is None else _sample_crops(loc, p and p.local_patches, p.patch_size if p else 0, rng),
            ))
        good = [c for c in crops if c is not None]
        if not good:
            raise RuntimeError(f"step {step}: every sample of rank {self.rank}'s batch is unusable: "
                               f"{sorted(redact_urls(str(e)) for e in unusable.values())}")
        skipped = len(crops) - len(good)
        filled = [c if c is not None else good[i % len(good)] for i, c in enumerate(crops)]
        batch = MultiCropBatch(CropBatch.stack([c[0] for c in filled]),
                               None if filled[0][1] is None else CropBatch.stack([c[1] for c in filled]))
        return Batch(step, batch, torch.from_numpy(refs.position.copy()), int(refs.is_padding.sum()), skipped,
                     time.perf_counter() - start, sum(s.retries_used for s in stores) - retries)


def _sample_crops(crops: Crops, num_patches: int | None, patch_size: int, rng: np.random.Generator) -> CropBatch:
    """One sample's crops of one kind as tensors, with the loader-side patch indices when those are on."""
    points, num_points = torch.from_numpy(crops.points), torch.from_numpy(crops.num_points.astype(np.int64, copy=False))
    if num_patches is None:
        return CropBatch(points, num_points)
    center_idx, patch_idx = patch_indices(crops, num_patches, patch_size, rng)
    return CropBatch(points, num_points, torch.from_numpy(center_idx.astype(np.int64, copy=False)),
                     torch.from_numpy(patch_idx.astype(np.int64, copy=False)))


def load_manifests(data: DataConfig) -> list[Manifest]:
    return [load_manifest(d.url, d.storage_options, d.split) for d in data.datasets]


def dataset_shards(manifest: Manifest, weight: float) -> DatasetShards:
    """What the order needs of a dataset: its shards' sample counts and excluded samples, and its weight."""
    return DatasetShards(tuple(s.nsamples for s in manifest.shards), weight,
                         tuple(s.excluded for s in manifest.shards))


def epoch_order(data: DataConfig, manifests: list[Manifest], seed: int, epoch: int, global_batch: int) -> EpochOrder:
    datasets = [dataset_shards(m, d.weight) for m, d in zip(manifests, data.datasets)]
    return EpochOrder(datasets, seed, epoch, global_batch, data.block_shards)


def make_loader(data: DataConfig, patches: PatchifyConfig | None, seed: int, manifests: list[Manifest], epoch: int,
                global_batch: int, rank: int, world: int, state: LoaderState | None = None,
                pin_memory: bool = False) -> tuple[DataLoader, EpochOrder]:
    """A DataLoader over one epoch for this rank, with `data.num_workers` workers; with `state`, it resumes
    after the consumed steps. `patches` (the model's patchify config) turns on loader-side FPS + kNN."""
    order = epoch_order(data, manifests, seed, epoch, global_batch)
    start_step = order.resume_step(state) if state is not None else 0
    stream = MultiCropStream(data, patches, seed, manifests, order, rank, world, start_step)
    workers = data.num_workers
    loader = DataLoader(stream, batch_size=None, num_workers=workers, pin_memory=pin_memory,
                        persistent_workers=False, prefetch_factor=2 if workers else None,
                        worker_init_fn=ignore_stop_signals)
    return loader, order


def ignore_stop_signals(worker_id: int) -> None:
    """A loader worker ignores SIGTERM and SIGINT: the process that owns it decides when to stop (and it exits
    when that process does), and launchers that signal a whole process tree must not kill it mid-step."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
