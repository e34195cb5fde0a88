"""Per-shape limits, so one pathological input cannot stall or kill a shard task.

* time: a wall-clock alarm around decoding and sampling (SIGALRM, main thread only: Ray runs tasks
  on the worker's main thread). Python code is interrupted at once; a single long C call (a huge
  numpy operation) is interrupted when it returns.
* memory: inputs larger than `max_bytes` are rejected before decoding, and meshes with more than
  `max_faces` faces / `max_vertices` vertices before sampling (see sharding.sampling). These bound
  a task's memory by construction rather than by killing it.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    time_s: float = 120.0
    max_bytes: int = 1 << 30


class ShapeTimeout(Exception):
    """The per-shape time limit fired."""


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise ShapeTimeout in the block after `seconds` (no-op off the main thread or for seconds <= 0)."""
    if seconds <= 0 or threading.current_thread() is not threading.main_thread():
        yield
        return

    def _fire(signum: int, frame: object) -> None:
        raise ShapeTimeout(f"exceeded the per-shape time limit of {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, _fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
