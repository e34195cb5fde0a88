"""Which samples repeat an earlier sample of the corpus, and which copy a shape of another set.

Both matches join two samples when their exact fingerprints are equal or their descriptors are
closer than the tolerance in L1 (`sharding.fingerprint`). Duplicates are decided greedily in corpus
order: a sample is a copy of the first earlier sample it matches that is itself kept (an exact match
before a near one), so every group keeps its first sample, and a chain of look-alikes (A ~ B ~ C,
A !~ C) loses B only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from sharding.fingerprint import distance, near_pairs


@dataclass(frozen=True)
class Matches:
    """Per corpus sample: the index it matches (-1: none), the descriptor distance, and whether the exact
    fingerprints are equal."""

    other: np.ndarray  # (n,) int64
    distance: np.ndarray  # (n,) float64
    exact: np.ndarray  # (n,) bool

    @property
    def found(self) -> np.ndarray:
        return self.other >= 0


def _exact_pairs(exact: np.ndarray) -> np.ndarray:
    """(P, 2) pairs i < j with equal fingerprints: each later copy paired with the first of its kind."""
    _, first, inverse = np.unique(exact, return_index=True, return_inverse=True)
    later = np.flatnonzero(first[inverse] != np.arange(len(exact)))
    return np.stack([first[inverse][later], later], axis=1).astype(np.int64)


def duplicates(exact: np.ndarray, descriptors: np.ndarray, tolerance: float) -> Matches:
    """For every sample, the kept earlier sample it copies (greedy in index order; see the module docstring)."""
    n = len(exact)
    exact_pairs, close_pairs = _exact_pairs(exact), near_pairs(descriptors, tolerance)
    pairs = np.concatenate([exact_pairs, close_pairs])
    inexact = np.repeat([False, True], [len(exact_pairs), len(close_pairs)])
    pairs = pairs[np.lexsort((pairs[:, 0], inexact, pairs[:, 1]))]  # by later sample, exact first, then earlier
    other = np.full(n, -1, np.int64)
    for first, later in pairs.tolist():
        if other[later] < 0 and other[first] < 0:  # the earlier one is kept, and `later` has no match yet
            other[later] = first
    return _matches(other, exact, descriptors, exact, descriptors)


def copies_of_test_shapes(exact: np.ndarray, descriptors: np.ndarray, test_exact: np.ndarray,
                     test_descriptors: np.ndarray, tolerance: float) -> Matches:
    """For every corpus sample, the test shape it copies: an equal exact fingerprint first, else the nearest
    descriptor under the tolerance."""
    other = np.full(len(exact), -1, np.int64)
    if len(test_exact) and len(exact):
        found = cKDTree(np.asarray(descriptors, np.float64)).sparse_distance_matrix(
            cKDTree(np.asarray(test_descriptors, np.float64)), tolerance, p=1, output_type="ndarray")
        found = found[found["v"] < tolerance]
        found = found[np.lexsort((-found["j"], -found["v"]))]  # the nearest (then lowest index) last wins
        other[found["i"]] = found["j"]
        first_of = {digest: j for j, digest in reversed(list(enumerate(test_exact.tolist())))}
        for i, digest in enumerate(exact.tolist()):
            if digest in first_of:
                other[i] = first_of[digest]
    return _matches(other, exact, descriptors, test_exact, test_descriptors)


def _matches(other: np.ndarray, exact: np.ndarray, descriptors: np.ndarray, other_exact: np.ndarray,
             other_descriptors: np.ndarray) -> Matches:
    found = np.flatnonzero(other >= 0)
    dist = np.full(len(other), np.nan)
    same = np.zeros(len(other), bool)
    dist[found] = distance(descriptors[found], other_descriptors[other[found]])
    same[found] = exact[found] == other_exact[other[found]]
    return Matches(other, dist, same)
