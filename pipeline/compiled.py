"""Numba compilation for the loader's kernels, cached on disk where a cache can be written.

With a cache, a DataLoader worker loads the compiled machine code (~0.4 s) instead of compiling it
(~4 s). Numba keeps the cache next to the source, else in `NUMBA_CACHE_DIR` or `~/.cache/numba`; where
none of these is writable (a read-only image run without a writable home) it refuses to decorate a
cached function, and the kernels are compiled in every process instead, with a warning, rather than
failing the import. Bounds checks stay off: callers validate sizes and indices before a kernel runs.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numba


def compiled(function: Callable) -> Callable:
    """`numba.njit` with the on-disk cache when one can be written, without it otherwise."""
    try:
        return numba.njit(cache=True, boundscheck=False)(function)
    except RuntimeError as err:  # "cannot cache function ...: no locator available for file ..."
        warnings.warn(f"compiling {function.__qualname__} in every process: {err}", RuntimeWarning,
                      stacklevel=2)
        return numba.njit(boundscheck=False)(function)
