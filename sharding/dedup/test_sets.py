"""Fingerprints of an evaluation set's test shapes, read by the evaluation's own readers.

Reading through `launch.evaluation` means a leak check looks at exactly the clouds the benchmarks
score. Our own sharded sets (`shards`) are read from their fingerprint files instead, so meshes are
matched by their exact geometry too. Objaverse-LVIS has no fixed test split (its K-shot folds redraw
it), so all its shapes count; its dense clouds are capped at LVIS_POINTS points as they are read,
so they are matched by descriptor only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import ValidationError

from configuration import ConfigError, format_validation_error
from sharding.config import TestSetConfig
from sharding.dedup.dataset import DedupError, open_dataset, read_corpus
from sharding.fingerprint import exact_fingerprint, shape_descriptor

LVIS_POINTS = 4096


@dataclass(frozen=True)
class TestSet:
    name: str
    keys: tuple[str, ...]  # the shapes' ids where the set has them, else their indices
    exact: np.ndarray  # (m,) S64
    descriptors: np.ndarray  # (m, DESCRIPTOR_SIZE) float32


def read_test_set(cfg: TestSetConfig) -> TestSet:
    """The fingerprints of `cfg`'s test shapes; a reader's error names the file at fault."""
    if cfg.kind == "shards":
        return _shard_test_set(cfg)
    from launch.evaluation.data import LabelledDataConfig, LabelledSet, load_dataset
    from launch.evaluation.part_data import load_part_dataset

    cap = LVIS_POINTS if cfg.kind == "objaverse_lvis" else None
    try:
        data_cfg = LabelledDataConfig.model_validate({"max_points": cap, **cfg.options, "kind": cfg.kind,
                                                      "path": cfg.path, "storage_options": cfg.storage_options})
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, f"test set {cfg.label}", LabelledDataConfig,
                                                  "test-set options")) from None
    data = load_part_dataset(data_cfg) if cfg.kind == "shapenetpart" else load_dataset(data_cfg)
    sets = [data.test, data.train] if cfg.kind == "objaverse_lvis" else [data.test]
    sets = [s if isinstance(s, LabelledSet) else s.labelled() for s in sets]
    clouds = [s.points[i, : s.num_points[i]] for s in sets for i in range(len(s))]
    keys = tuple(key for s in sets for key in (s.keys or (f"{s.name}[{i}]" for i in range(len(s)))))
    return TestSet(cfg.label, keys, np.array([exact_fingerprint(c) for c in clouds], dtype="S64"),
                   np.array([shape_descriptor(c) for c in clouds], dtype=np.float32).reshape(len(clouds), -1))


def _shard_test_set(cfg: TestSetConfig) -> TestSet:
    """The `test` split of a dataset written by `sharding.shard_corpus`, from its fingerprint files."""
    out, manifest = open_dataset(cfg.path, cfg.storage_options)
    corpus = read_corpus(out, manifest, split="test")
    if not len(corpus.keys):
        raise DedupError(f"test set {cfg.label}: {cfg.path} has no samples of split 'test'")
    return TestSet(cfg.label, tuple(corpus.keys.tolist()), corpus.exact, corpus.descriptors)
