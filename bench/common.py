"""What every benchmark shares: one-core thread settings, best-of-rounds and forward+backward timing, and how
results are handed back.

Each benchmark prints a human summary and, last, one line `RESULT {json}` that scripts parse (the GPU
check reads the same object from `--json PATH`). Nothing here imports numpy or torch, so a benchmark
can pin the thread pools with `one_core_threads()` before those are loaded (`forward_backward_ms` imports
torch when called).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
Timed = TypeVar("Timed", bound=tuple)


def one_core_threads() -> None:
    """One OpenMP/MKL/OpenBLAS thread unless the caller set others; call it before numpy or torch is imported,
    since the pools read these variables when they load."""
    for name in THREAD_VARIABLES:
        os.environ.setdefault(name, "1")


def best_of_rounds(rounds: int, runs: Mapping[str, Callable[[], Timed]]) -> dict[str, Timed]:
    """Every run `rounds` times, the runs alternating so that a shared machine's noise falls on all of them;
    per name the result with the fewest seconds. A run returns a tuple whose first item is its seconds."""
    best: dict[str, Timed] = {}
    for _ in range(rounds):
        for name, run in runs.items():
            result = run()
            if name not in best or result[0] < best[name][0]:
                best[name] = result
    return best


def add_json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", type=Path, help="also write the result object to this file")


def emit(result: dict, json_path: str | Path | None = None) -> None:
    """Write `result` to `json_path` (when given), then print it as the `RESULT` line scripts parse."""
    if json_path:
        Path(json_path).write_text(json.dumps(result, indent=2) + "\n")
    print("RESULT " + json.dumps(result), flush=True)


def benchmark_main(
    parse_args: Callable[[list[str] | None], argparse.Namespace],
    measure: Callable[[argparse.Namespace], dict],
    show: Callable[[dict], None] | None = None,
) -> Callable[[list[str] | None], int]:
    """A benchmark's `main(argv)`: parse (the parser has `--json`), measure, print the summary, emit the result."""

    def main(argv: list[str] | None = None) -> int:
        args = parse_args(argv)
        result = measure(args)
        if show is not None:
            show(result)
        emit(result, args.json)
        return 0

    return main


def forward_backward_ms(fn: Callable, x, steps: int, device) -> tuple[float, float]:
    """Mean ms of `fn(x).float().sum().backward()` after two warm-up calls, and peak CUDA MiB (NaN on CPU)."""
    import torch

    for _ in range(2):
        fn(x).float().sum().backward()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        fn(x).float().sum().backward()
    if device.type == "cuda":
        torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else float("nan")
    return (time.perf_counter() - start) / steps * 1e3, peak
