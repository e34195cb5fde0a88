"""Vectorised helpers for line-oriented text formats (OBJ, OFF, ASCII PLY)."""

from __future__ import annotations

import numpy as np

_WHITESPACE = np.zeros(256, dtype=bool)
_WHITESPACE[[9, 10, 11, 12, 13, 32]] = True


def tokens_per_line(block: bytes, num_lines: int) -> np.ndarray:
    """How many whitespace-separated tokens each of the `num_lines` newline-separated lines of `block` holds.

    A handful of passes over the bytes in numpy, instead of splitting every line in Python.
    """
    raw = np.frombuffer(block, dtype=np.uint8)
    if len(raw) == 0:
        return np.zeros(num_lines, dtype=np.int64)
    space = _WHITESPACE[raw]
    starts = np.flatnonzero(~space[1:] & space[:-1]) + 1
    if not space[0]:
        starts = np.concatenate(([0], starts))
    line_ends = np.flatnonzero(raw == 10)
    return np.bincount(np.searchsorted(line_ends, starts), minlength=num_lines)[:num_lines]


def ragged_take(values: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """values[starts[0]:starts[0] + lengths[0]], then the next run, ... concatenated, without a Python loop."""
    offsets = np.cumsum(lengths) - lengths
    return values[np.repeat(starts - offsets, lengths) + np.arange(int(lengths.sum()))]


def nonblank_lines(block: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(first byte, end byte, token count) of each line of `block` that holds a token, in file order.

    Blank lines are dropped here, so a line number in these arrays counts only lines with content. An end
    excludes the line's newline; a slice from one line's start to a later line's end holds whole lines.
    """
    raw = np.frombuffer(block, dtype=np.uint8)
    newlines = np.flatnonzero(raw == 10)
    starts = np.concatenate(([0], newlines + 1))
    ends = np.concatenate((newlines, [len(raw)]))
    if starts[-1] == len(raw):  # the block ends with a newline: the empty line after it holds nothing
        starts, ends = starts[:-1], ends[:-1]
    if len(starts) == 0:
        return starts, ends, np.zeros(0, dtype=np.int64)
    space = _WHITESPACE[raw]
    token_starts = ~space
    token_starts[1:] &= space[:-1]
    tokens = np.add.reduceat(token_starts, starts, dtype=np.int64)
    keep = tokens > 0
    return starts[keep], ends[keep], tokens[keep]
