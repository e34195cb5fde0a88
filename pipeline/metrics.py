"""Loader metrics the trainer logs: throughput, time spent waiting for data, skipped and padded samples.

`LoaderMeter` wraps the batch iterator. The time between the consumer asking for a batch and getting
it is data wait; the rest is the consumer's own work (the training step). A data-wait fraction
that is not small means the loader, not the GPU, sets the pace.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from pipeline.loader import Batch


@dataclass
class LoaderStats:
    batches: int = 0
    samples: int = 0
    skipped: int = 0
    padding: int = 0
    wait_seconds: float = 0.0
    elapsed_seconds: float = 0.0
    worker_seconds: float = 0.0  # batch-building time summed over workers (load_seconds)

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.elapsed_seconds if self.elapsed_seconds > 0 else 0.0

    @property
    def data_wait_fraction(self) -> float:
        return self.wait_seconds / self.elapsed_seconds if self.elapsed_seconds > 0 else 0.0

    def as_metrics(self, prefix: str = "data/") -> dict[str, float]:
        return {
            f"{prefix}wait_fraction": self.data_wait_fraction,
            f"{prefix}samples_skipped": float(self.skipped),
            f"{prefix}samples_padding": float(self.padding),
            f"{prefix}worker_seconds_per_batch": self.worker_seconds / max(self.batches, 1),
        }


class LoaderMeter:
    """Iterate batches while counting them; `stats` covers everything since the meter started.

    The elapsed time moves on both when a batch arrives and when the next one is asked for, so `stats`
    read at any point (the trainer reads it during the step) counts no wait outside its elapsed time.
    """

    def __init__(self, batches: Iterable[Batch], clock=time.perf_counter) -> None:
        self._batches = batches
        self._clock = clock
        self.stats = LoaderStats()

    def __iter__(self) -> Iterator[Batch]:
        start = asked = self._clock()
        for batch in self._batches:
            got = self._clock()
            s = self.stats
            s.wait_seconds += got - asked
            s.elapsed_seconds = got - start
            s.batches += 1
            s.samples += int(batch.positions.numel())
            s.skipped += batch.skipped
            s.padding += batch.padding
            s.worker_seconds += batch.load_seconds
            yield batch
            asked = self._clock()
            s.elapsed_seconds = asked - start
