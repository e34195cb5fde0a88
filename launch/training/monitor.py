"""Downstream probes while pretraining: the teacher encoder scored by linear SVM and k-NN on labelled sets.

The reference scores its teacher the same way every 5 epochs on ModelNet40 and ScanObjectNN
(`configs/ssrl/ssrl_trainer.yaml`: `EmbeddingClassifierEval` with `LinearSVMClassifier` and
`KNNClassifier`, k = 5, on [CLS, mean] features); here a set is anything the evaluation readers take.

Features are extracted over ranks in fixed chunks of `monitor.batch_size` clouds, each chunk seeded by
its index, so they do not depend on the world size or the step. Rank 0 gathers them and scores them
on a background thread while training goes on: the other ranks wait only for the feature pass. Each
result carries the step whose weights it describes and is logged at that step, however late it lands.
"""

from __future__ import annotations

import math
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch

from launch.evaluation.data import DatasetError, LabelledSet, TrainTest, load_dataset
from launch.evaluation.features import InputSpec, extract_features
from launch.evaluation.protocols import default_input, knn_predict, svm_predict
from launch.evaluation.train import predictions
from launch.training.config import MonitorConfig, MonitorSet
from launch.training.distributed import DistEnv, gather_to_main
from launch.training.errors import MonitorSetError
from model.config import ModelConfig
from model.backbone import Backbone
from pipeline.manifest import ManifestError



@dataclass(frozen=True)
class ProbeSet:
    name: str
    data: TrainTest
    spec: InputSpec


@dataclass(frozen=True)
class ProbeResult:
    """One set's accuracies (protocol -> test accuracy) for the weights of optimizer step `step`."""

    step: int
    name: str
    accuracy: dict[str, float]
    seconds: float  # feature pass and scoring


def load_probe_set(cfg: MonitorSet, model_cfg: ModelConfig) -> ProbeSet:
    try:
        data = load_dataset(cfg.dataset)
    except (DatasetError, ManifestError, OSError) as err:
        raise MonitorSetError(f"monitor.sets '{cfg.name}' ({cfg.dataset.kind}:{cfg.dataset.path}): {err}") from None
    if not len(data.train) or not len(data.test):
        raise MonitorSetError(f"monitor.sets '{cfg.name}': {len(data.train)} training and {len(data.test)} test "
                              f"samples; a probe needs both")
    return ProbeSet(cfg.name, data, cfg.input.apply(default_input(model_cfg, cfg.dataset.kind)))


def chunk_seed(seed: int, set_index: int, split: int, chunk: int) -> int:
    return int(np.random.SeedSequence([seed, set_index, split, chunk, 0x0B5E]).generate_state(1, np.uint32)[0])


class Monitor:
    """`due(step)` says when to probe; `probe` (every rank) runs the feature pass; `results` (rank 0) collects.

    Every rank holds every set (`load_probe_set`) and extracts the chunks it owns.
    """

    def __init__(self, cfg: MonitorConfig, sets: list[ProbeSet], env: DistEnv, steps_per_epoch: int,
                 last_step: int, seed: int) -> None:
        self.cfg, self.sets, self.env, self.last_step, self.seed = cfg, sets, env, last_step, seed
        self.epoch_interval = max(1, round(cfg.every_epochs * steps_per_epoch)) if cfg.every_epochs else 0
        self._scorer = ThreadPoolExecutor(1, thread_name_prefix="monitor") if self.sets and env.is_main else None
        self._pending: list[Future[ProbeResult]] = []

    def due(self, step: int) -> bool:
        if not self.sets:
            return False
        if step == 0:
            return self.cfg.at_start
        return step == self.last_step or self._on_cadence(step)

    def passes_after(self, step: int) -> int:
        """How many probes are still due after optimizer step `step` (the ETA counts them)."""
        if not self.sets or step >= self.last_step:
            return 0
        a, b = self.cfg.every_steps, self.epoch_interval

        def multiples(n: int) -> int:
            return self.last_step // n - step // n if n else 0

        count = multiples(a) + multiples(b) - (multiples(math.lcm(a, b)) if a and b else 0)
        return count + (not self._on_cadence(self.last_step))

    def _on_cadence(self, step: int) -> bool:
        return bool((self.cfg.every_steps and step % self.cfg.every_steps == 0)
                    or (self.epoch_interval and step % self.epoch_interval == 0))

    def probe(self, encoder: Backbone, step: int, autocast: torch.dtype | None) -> float:
        """Extract this rank's share of every set's features and hand them to rank 0's scorer.

        Every rank calls it at the same step; returns the seconds this rank spent (not the scoring).
        """
        start = time.perf_counter()
        for index, probe_set in enumerate(self.sets):
            set_start = time.perf_counter()
            with (torch.autocast(self.env.device.type, dtype=autocast) if autocast is not None else nullcontext()):
                parts = [self._features(encoder, part, probe_set.spec, index, split)
                         for split, part in enumerate((probe_set.data.train, probe_set.data.test))]
            gathered = gather_to_main(parts)
            if self._scorer is not None:
                train_x, test_x = (_assemble([rank[split] for rank in gathered]) for split in (0, 1))
                self._pending.append(self._scorer.submit(self._score, step, probe_set, train_x, test_x,
                                                         time.perf_counter() - set_start))
        return time.perf_counter() - start

    def results(self, wait: bool = False) -> list[ProbeResult]:
        """Scores that are ready (all of them with `wait`), oldest first; a failed scoring raises here."""
        ready = [f for f in self._pending if wait or f.done()]
        self._pending = [f for f in self._pending if f not in ready]
        return [f.result() for f in ready]

    def close(self) -> None:
        if self._scorer is not None:
            self._scorer.shutdown(wait=True, cancel_futures=True)

    def _features(self, encoder: Backbone, data: LabelledSet, spec: InputSpec, set_index: int, split: int
                  ) -> dict[int, np.ndarray]:
        """{chunk index: L2-normalised features} of the chunks this rank owns (chunk i -> rank i % world)."""
        size, world, rank = self.cfg.batch_size, self.env.world_size, self.env.rank
        out = {}
        for chunk in range(rank, -(-len(data) // size), world):
            part = data.subset(np.arange(chunk * size, min((chunk + 1) * size, len(data))))
            out[chunk] = extract_features(encoder, part, spec, encoder.feature_pooling, self.env.device,
                                          chunk_seed(self.seed, set_index, split, chunk), size)
        return out

    def _score(self, step: int, probe_set: ProbeSet, train_x: np.ndarray, test_x: np.ndarray,
               feature_seconds: float) -> ProbeResult:
        start = time.perf_counter()
        train, test = probe_set.data.train, probe_set.data.test
        accuracy = {}
        for protocol in self.cfg.protocols:
            if protocol == "svm":
                pred = svm_predict(train_x, train.labels, test_x, self.cfg.svm_c, self.seed)
            else:
                pred = knn_predict(train_x, train.labels, test_x, self.cfg.knn_k, len(train.class_names))
            accuracy[protocol] = predictions(test.labels, pred).accuracy
        return ProbeResult(step, probe_set.name, accuracy, feature_seconds + time.perf_counter() - start)


def _assemble(per_rank: list[dict[int, np.ndarray]]) -> np.ndarray:
    """The chunks of all ranks, in chunk order, as one (S, F) array."""
    chunks = {i: x for part in per_rank for i, x in part.items()}
    return np.concatenate([chunks[i] for i in sorted(chunks)])
