"""Per-shape limits, so one pathological input cannot stall or kill a shard task.

* time: a wall-clock alarm around decoding and sampling (SIGALRM, main thread only: Ray runs tasks
  on the worker's main thread). Python code is interrupted at once; a single long C call (a huge
  numpy operation) is interrupted when it returns.
* memory: an input whose size (a file's, a zip member's, a tar member's) is over `max_bytes` is
  rejected before any of it is read, and every read stops at `max_bytes` + 1 bytes, so an input
  larger than it claims never reaches a decoder either. Arrays packed inside an input (.npz members,
  HDF5 datasets) are held to the same limit before they are unpacked, and meshes with more than
  `max_faces` faces / `max_vertices` vertices are rejected before sampling (see sharding.sampling).
  These bound a task's memory by construction rather than by killing it.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sharding.records import ShapeError


@dataclass(frozen=True)
class Limits:
    time_s: float = 120.0
    max_bytes: int = 1 << 30


def check_size(size: int, limit: int, what: str = "input") -> None:
    """Reject `what` by the size it declares, before any of it is read or unpacked."""
    if size > limit:
        raise ShapeError("limits", f"{what} is {size} bytes > max_bytes {limit}")


def within_limit(data: bytes, limit: int) -> bytes:
    """`data`, read as at most `limit` + 1 bytes: one byte more means the input is larger than it declared."""
    if len(data) > limit:
        raise ShapeError("limits", f"input is more than max_bytes {limit} bytes")
    return data


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
