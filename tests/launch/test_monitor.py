"""Downstream probes during pretraining: when they run, what they compute, and what the run page gets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from mlflow import MlflowClient

from configuration import ConfigError
from launch.evaluation.data import LabelledDataConfig, LabelledSet, TrainTest
from launch.evaluation.encoders import random_encoder
from launch.evaluation.features import InputSpec
from launch.training.config import MonitorConfig, MonitorSet, load_pretrain_config
from launch.training.distributed import DistEnv
from launch.training.errors import MonitorSetError
from launch.training.monitor import Monitor, ProbeSet, _assemble, load_probe_set
from model.config import load_model_config, model_config_from_dict
from sharding.synthetic import FAMILIES
from tests.conftest import ROOT
from tests.launch.conftest import DEMO, launch, python_pretrain, small_run

TINY = load_model_config(ROOT / "configs" / "model" / "tiny.yaml")
SPEC = InputSpec(num_points=128, num_patches=16, patch_size=16)


def env(rank: int = 0, world: int = 1) -> DistEnv:
    return DistEnv(rank, world, rank, world, torch.device("cpu"))


def two_blobs(n: int = 40) -> TrainTest:
    """Spheres and flat discs, alternating: any encoder separates them."""
    rng = np.random.default_rng(0)
    clouds = rng.normal(size=(n, 200, 3)).astype(np.float32)
    clouds[1::2, :, 2] *= 0.05
    labels = np.arange(n) % 2
    whole = LabelledSet("blobs", clouds, np.full(n, 200), labels, ("sphere", "disc"))
    return TrainTest(whole.subset(np.arange(n // 2)), whole.subset(np.arange(n // 2, n)), {})


def test_probes_run_at_start_on_the_cadence_and_at_the_last_step():
    sets = [ProbeSet("blobs", two_blobs(), SPEC)]
    by_epochs = Monitor(MonitorConfig(every_epochs=2), sets, env(), steps_per_epoch=5, last_step=23, seed=0)
    assert [s for s in range(24) if by_epochs.due(s)] == [0, 10, 20, 23]
    by_steps = Monitor(MonitorConfig(every_epochs=0, every_steps=4, at_start=False), sets, env(), 5, 12, 0)
    assert [s for s in range(13) if by_steps.due(s)] == [4, 8, 12]
    nothing = Monitor(MonitorConfig(), [], env(), 5, 12, 0)
    assert not any(nothing.due(s) for s in range(13))
    both = Monitor(MonitorConfig(every_epochs=1, every_steps=4), sets, env(), steps_per_epoch=6, last_step=25, seed=0)
    for monitor in (by_epochs, by_steps, both, nothing):  # the ETA's count of what is left
        last = monitor.last_step
        assert [monitor.passes_after(s) for s in range(last + 1)] == [
            sum(monitor.due(t) for t in range(s + 1, last + 1)) for s in range(last + 1)]


def test_features_do_not_depend_on_how_many_ranks_extract_them():
    """Chunk i goes to rank i % world and is seeded by i: two ranks' chunks assemble into one rank's features."""
    data = two_blobs(44).train  # 22 clouds: chunks of 8, 8, 6
    encoder = random_encoder(TINY)
    cfg = MonitorConfig(batch_size=8)
    alone = Monitor(cfg, [], env(), 1, 1, 0)._features(encoder, data, SPEC, 0, 0)
    ranks = [Monitor(cfg, [], env(r, 2), 1, 1, 0)._features(encoder, data, SPEC, 0, 0) for r in (0, 1)]
    assert sorted(ranks[0]) == [0, 2] and sorted(ranks[1]) == [1]
    np.testing.assert_array_equal(_assemble(ranks), _assemble([alone]))
    assert _assemble([alone]).shape == (22, 2 * TINY.encoder.dim)


def test_a_pass_scores_both_protocols_for_the_step_it_was_taken_at():
    monitor = Monitor(MonitorConfig(), [ProbeSet("blobs", two_blobs(), SPEC)], env(), 1, 1, 0)
    waited = monitor.probe(random_encoder(TINY), 7, None)
    (result,) = monitor.results(wait=True)
    monitor.close()
    assert result.step == 7 and result.name == "blobs" and set(result.accuracy) == {"svm", "knn"}
    assert result.accuracy["svm"] == 1.0 and result.accuracy["knn"] >= 0.9
    # the caller's time is the feature pass, not the scoring (0.1 s allows for handing off on a loaded machine)
    assert 0 < waited <= result.seconds + 0.1


@pytest.mark.parametrize("backbone", ["pointnet", "dgcnn"])
def test_a_point_network_teacher_is_probed_on_its_own_pooling(backbone):
    cfg = model_config_from_dict({**TINY.model_dump(), "method": "dwc", "backbone": backbone,
                                  "pointnet": {"widths": [16, 32]}, "dgcnn": {"k": 6, "edge_widths": [8, 16],
                                                                             "global_dim": 32}})
    encoder = random_encoder(cfg)
    monitor = Monitor(MonitorConfig(batch_size=8), [ProbeSet("blobs", two_blobs(), SPEC)], env(), 1, 1, 0)
    features = _assemble([monitor._features(encoder, two_blobs().train, SPEC, 0, 0)])
    assert features.shape == (20, encoder.embedding_dim)  # max (PointNet), max + mean (DGCNN) of 32 channels
    monitor.probe(encoder, 3, None)
    (result,) = monitor.results(wait=True)
    monitor.close()
    assert result.step == 3 and result.accuracy["svm"] >= 0.9


def test_an_unreadable_set_is_named(tmp_path):
    cfg = MonitorSet(name="mn40", dataset=LabelledDataConfig(kind="modelnet40_h5", path=str(tmp_path / "none.zip")))
    with pytest.raises(MonitorSetError, match=r"monitor.sets 'mn40' \(modelnet40_h5:.*none.zip\)"):
        load_probe_set(cfg, TINY)


def test_set_names_and_protocols_are_checked():
    with pytest.raises(ConfigError, match="monitor.sets.*unique"):
        load_pretrain_config(DEMO, ['monitor.sets=[{name: a, dataset: {kind: shards, path: x}}, '
                                    '{name: a, dataset: {kind: shards, path: y}}]'])
    with pytest.raises(ConfigError, match="monitor.protocols"):
        load_pretrain_config(DEMO, ["monitor.protocols=[svm, linear]"])
    with pytest.raises(ConfigError, match="monitor.sets.0.name"):
        load_pretrain_config(DEMO, ['monitor.sets=[{name: "a/b", dataset: {kind: shards, path: x}}]'])


@pytest.mark.slow
def test_a_pretraining_run_logs_its_probes_at_the_configured_steps(pretrain_shards, tmp_path):
    """48 labelled synthetic shapes, probed every 8 of 24 steps: accuracies at 0, 8, 16, 24, above chance at the end."""
    probe = (f"monitor.sets=[{{name: synthetic, dataset: {{kind: shards, path: {pretrain_shards}, "
             f"test_fraction: 0.34, max_points: 1024}}, input: {{num_points: 512, num_patches: 32, patch_size: 16}}}}]")
    result = launch(python_pretrain(*small_run(pretrain_shards, tmp_path / "run", probe, "monitor.every_epochs=0",
                                               "monitor.every_steps=8", "checkpoint.every_steps=0")), tmp_path)
    assert result.returncode == 0, result.output[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("asymdsd-demo").experiment_id])
    assert run.info.run_name == "demo"  # the job's name
    chance = 1 / len(FAMILIES)  # balanced classes
    for protocol in ("svm", "knn"):
        curve = {m.step: m.value for m in client.get_metric_history(run.info.run_id, f"monitor/synthetic/{protocol}")}
        assert sorted(curve) == [0, 8, 16, 24], curve
        assert curve[24] > chance, curve
        best = client.get_metric_history(run.info.run_id, f"monitor/synthetic/{protocol}/best")
        assert best[-1].value == max(curve.values())
    lines = [line for line in result.output.splitlines() if line.startswith("[pretrain] monitor synthetic")]
    assert [line.split(" at step ")[1].split(":")[0] for line in lines] == ["0", "8", "16", "24"]
