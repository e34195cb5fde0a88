"""The dedup stage over a written dataset: fingerprints in, a report and a manifest with exclusions out.

Every sample's fingerprints come from the shard's fingerprint file. Duplicates inside the corpus are
found in manifest order, test then val samples first (`matching.duplicates`), copies of test shapes
against every configured test set. The report, `dedup/report.json`, lists every group and every match; the manifest lists per shard
the samples training skips, counts them by source, split and reason, and records the report's sha256.
Re-running on the same dataset recomputes from the fingerprints, so the result never depends on an
earlier run's exclusions.
"""

from __future__ import annotations

import hashlib
import sys
from collections import Counter
from collections.abc import Callable

import numpy as np

from sharding.config import DedupConfig
from sharding.dedup.dataset import Corpus, read_corpus
from sharding.dedup.matching import Matches, copies_of_test_shapes, duplicates
from sharding.dedup.test_sets import TestSet, read_test_set
from sharding.manifest import Deduplication, ShardManifest
from sharding.storage import Output, json_bytes

REPORT = "dedup/report.json"
EVALUATION_SPLITS = ("test", "val")  # kept over any other split's copy, in this order


def deduplicate(out: Output, manifest: ShardManifest, cfg: DedupConfig,
                log: Callable[[str], None] = lambda line: print(line, file=sys.stderr)) -> ShardManifest:
    """Match, publish the report, and return `manifest` with the exclusions `cfg.exclude` asks for."""
    corpus = read_corpus(out, manifest)
    copies = _duplicates_keeping_evaluation_splits(corpus, manifest, cfg.tolerance)
    log(f"dedup: {len(corpus.keys)} samples, {int(copies.found.sum())} copies of earlier samples "
        f"({int(copies.exact.sum())} exact)")
    test_sets, leaks = [], []
    for test_cfg in cfg.test_sets:
        test_set = read_test_set(test_cfg)
        matches = copies_of_test_shapes(corpus.exact, corpus.descriptors, test_set.exact, test_set.descriptors,
                                   cfg.tolerance)
        log(f"dedup: {int(matches.found.sum())} samples match one of the {len(test_set.keys)} test shapes of "
            f"{test_set.name}")
        test_sets.append(test_set)
        leaks.append(matches)
    reason = _reasons(copies, leaks, cfg.exclude)
    report = _report(corpus, copies, test_sets, leaks, reason, cfg)
    data = json_bytes(report)
    out.publish_bytes(data, REPORT)
    record = Deduplication(report=REPORT, report_sha256=hashlib.sha256(data).hexdigest(), tolerance=cfg.tolerance,
                           test_sets=[t.name for t in test_sets], excluded=dict(Counter(reason[reason != ""].tolist())))
    return with_exclusions(manifest, corpus, reason, record)


def _duplicates_keeping_evaluation_splits(corpus: Corpus, manifest: ShardManifest, tolerance: float) -> Matches:
    """`duplicates` with the samples of split test first, then val, then the rest in manifest order: of a
    shape in two splits, the evaluation one is kept and the training copy is the one excluded."""
    rank = {split: i for i, split in enumerate(EVALUATION_SPLITS)}
    split_rank = np.array([rank.get(e.split, len(rank)) for e in manifest.shardlist] or [0])[corpus.shard]
    order = np.argsort(split_rank, kind="stable")
    found = duplicates(corpus.exact[order], corpus.descriptors[order], tolerance)
    other = np.full(len(order), -1, np.int64)
    other[order] = np.where(found.found, order[np.maximum(found.other, 0)], -1)
    distance, exact = np.empty(len(order)), np.empty(len(order), bool)
    distance[order], exact[order] = found.distance, found.exact
    return Matches(other, distance, exact)


def _reasons(copies: Matches, leaks: list[Matches], exclude: list[str]) -> np.ndarray:
    """Per sample, why training skips it ("" = it does not): a test-set copy first, else a duplicate."""
    reason = np.full(len(copies.other), "", dtype="<U9")
    if "duplicate" in exclude:
        reason[copies.found] = "duplicate"
    if "test-set" in exclude:
        for matches in leaks:
            reason[matches.found] = "test-set"
    return reason


def _report(corpus: Corpus, copies: Matches, test_sets: list[TestSet], leaks: list[Matches], reason: np.ndarray,
            cfg: DedupConfig) -> dict:
    keys = corpus.keys.tolist()
    groups: dict[int, list[dict]] = {}
    for later in np.flatnonzero(copies.found).tolist():
        groups.setdefault(int(copies.other[later]), []).append(
            {"key": keys[later], "distance": round(float(copies.distance[later]), 5),
             "exact": bool(copies.exact[later])})
    matches = [{"key": keys[i], "test_set": t.name, "test_key": t.keys[int(m.other[i])],
                "distance": round(float(m.distance[i]), 5), "exact": bool(m.exact[i])}
               for t, m in zip(test_sets, leaks) for i in np.flatnonzero(m.found).tolist()]
    return {
        "tolerance": cfg.tolerance,
        "exclude": sorted(cfg.exclude),
        "samples": len(keys),
        "test_sets": {t.name: len(t.keys) for t in test_sets},
        "groups": [{"kept": keys[first], "copies": group} for first, group in sorted(groups.items())],
        "test_set_matches": matches,
        "excluded": {r: int((reason == r).sum()) for r in ("duplicate", "test-set")},
    }


def with_exclusions(manifest: ShardManifest, corpus: Corpus, reason: np.ndarray,
                    record: Deduplication) -> ShardManifest:
    """`manifest` with per-shard exclusion lists and excluded counts replaced by those of `reason`."""
    skipped = reason != ""
    by_shard: dict[int, list[int]] = {}
    for shard, index in zip(corpus.shard[skipped].tolist(), corpus.index[skipped].tolist()):
        by_shard.setdefault(shard, []).append(index)
    shardlist = [e.model_copy(update={"excluded": by_shard.get(i, [])}) for i, e in enumerate(manifest.shardlist)]
    by_source = Counter(corpus.sources[skipped].tolist())
    split_of = [e.split for e in manifest.shardlist]
    by_split = Counter(split_of[s] for s in corpus.shard[skipped].tolist())
    updated = manifest.model_copy(update={
        "shardlist": shardlist,
        "sources": {s: c.model_copy(update={"excluded": by_source.get(s, 0)}) for s, c in manifest.sources.items()},
        "splits": {s: c.model_copy(update={"excluded": by_split.get(s, 0)}) for s, c in manifest.splits.items()},
        "total_excluded": int(skipped.sum()),
        "deduplication": record,
    })
    return ShardManifest.model_validate(updated.to_json())  # the accounting checks, on the new counts
