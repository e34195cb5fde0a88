"""Every protocol on small labelled sets: high where the features separate the classes, near chance on
shuffled labels; the frozen phases leave the encoder alone; few-shot folds; voting; mean +- std."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from launch.evaluation.data import fewshot_fold
from launch.evaluation.features import InputSpec, extract_features, pool
from launch.evaluation.protocols import (
    FeatureConfig,
    FewShotConfig,
    fewshot_runs,
    knn_predict,
    knn_run,
    neural_recipe,
    svm_accuracy,
    svm_run,
)
from launch.evaluation.report import mean_std
from launch.evaluation.restricted_pickle import RefusedPickle
from launch.evaluation.train import NeuralConfig, Phase, train_classifier
from tests.launch.eval_fixtures import SMALL_INPUT, shape_set, shuffled, tiny_encoder, write_fewshot_folds

FEATURES = FeatureConfig(input=SMALL_INPUT)
CHANCE_BOUND = 0.6  # 3 balanced classes, 60 test clouds: chance is 1/3, 0.6 is > 4 standard deviations above


@pytest.fixture(scope="module")
def shapes_train_test():
    """(train, test): 24 and 20 clouds per class of sphere / plane / line."""
    return shape_set(24, seed=0, name="train"), shape_set(20, seed=1, name="test")


@pytest.fixture(scope="module")
def tiny_random_encoder():
    """(encoder, model config) of the tiny architecture, randomly initialised."""
    return tiny_encoder(0)


def _probe(head: str, frozen: bool, lr: float, epochs: int = 10, **extra) -> NeuralConfig:
    phase = Phase(epochs=epochs, frozen_encoder=frozen, start_lr=lr, peak_lr=lr, end_lr=lr / 10)
    return NeuralConfig(head=head, phases=[phase], input=SMALL_INPUT, **{"batch_size": 16, **extra})


@pytest.mark.slow
@pytest.mark.parametrize("run", [svm_run, knn_run], ids=["svm", "knn"])
def test_frozen_feature_protocols_separate_classes_and_not_shuffled_labels(run, shapes_train_test, tiny_random_encoder):
    train, test = shapes_train_test
    encoder, _ = tiny_random_encoder
    good = run(encoder, train, test, "cpu", 0, FEATURES)
    assert good.accuracy >= 0.7  # a random-init encoder: SVM 0.78-0.83, kNN 0.85-0.92 over encoder seeds 0-3
    assert good.y_pred.shape == good.y_true.shape == (60,) and good.features["test"].shape[0] == 60
    assert run(encoder, shuffled(train), test, "cpu", 0, FEATURES).accuracy < CHANCE_BOUND


def test_svm_features_are_unit_length_cls_and_mean(shapes_train_test, tiny_random_encoder):
    encoder, _ = tiny_random_encoder
    feats = extract_features(encoder, shapes_train_test[0], SMALL_INPUT, ("cls", "mean"), "cpu", seed=0)
    assert feats.shape == (72, 2 * encoder.dim)
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, rtol=1e-5)


def test_svm_accuracy_helper_for_the_demo(shapes_train_test, tiny_random_encoder):
    encoder, cfg = tiny_random_encoder
    assert svm_accuracy(encoder, cfg, *shapes_train_test, device="cpu") >= 0.8


def test_pool_includes_cls_in_mean_when_it_is_not_a_feature():
    tokens = torch.arange(12.0).view(1, 3, 4)  # CLS row 0, patches rows 1..2
    np.testing.assert_allclose(pool(tokens, True, ("mean",)), tokens.mean(1))
    np.testing.assert_allclose(pool(tokens, True, ("cls", "mean")), torch.cat([tokens[:, 0], tokens[:, 1:].mean(1)], -1))
    np.testing.assert_allclose(pool(tokens, True, ("cls", "max"))[:, 4:], tokens[:, 1:].amax(1))


def test_knn_vote_is_a_majority_of_the_nearest():
    train_x = np.eye(3, dtype=np.float32)[[0, 0, 1, 2]]
    train_y = np.array([1, 1, 0, 2])
    test_x = np.array([[1, 0.1, 0], [0.2, 0, 1]], dtype=np.float32)  # second: nearest is class 2, next two class 1
    assert knn_predict(train_x, train_y, test_x, k=1, num_classes=3).tolist() == [1, 2]
    assert knn_predict(train_x, train_y, test_x, k=3, num_classes=3).tolist() == [1, 1]


@pytest.mark.slow
@pytest.mark.parametrize("head", ["linear", "mlp"])
def test_probes_learn_the_classes_and_leave_the_encoder_untouched(head, shapes_train_test, tiny_random_encoder):
    train, test = shapes_train_test
    encoder, cfg = tiny_random_encoder
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    outcome = train_classifier(encoder, cfg, train, test, _probe(head, True, 1e-2), "cpu", seed=0)
    assert outcome.final.accuracy >= 0.7  # random-init encoder seeds 0-2: linear 0.77-0.88, mlp 0.93-1.0
    for key, value in outcome.model.encoder.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0, msg=f"frozen probe changed {key}")
    shuffled_outcome = train_classifier(encoder, cfg, shuffled(train), test, _probe(head, True, 1e-2), "cpu", seed=0)
    assert shuffled_outcome.final.accuracy < CHANCE_BOUND


@pytest.mark.slow
def test_two_stage_finetune_trains_the_encoder_only_in_its_second_stage(shapes_train_test, tiny_random_encoder):
    train, test = shapes_train_test
    encoder, cfg = tiny_random_encoder
    stages = [Phase(epochs=3, frozen_encoder=True, shape="linear", start_lr=1e-2, end_lr=1e-3),
              Phase(epochs=4, frozen_encoder=False, start_lr=0.0, peak_lr=1e-3, end_lr=1e-5, warmup_epochs=1)]
    first = NeuralConfig(head="mlp", phases=stages[:1], input=SMALL_INPUT, batch_size=16)
    frozen = train_classifier(encoder, cfg, train, test, first, "cpu", seed=0).model
    torch.testing.assert_close(frozen.encoder.state_dict(), encoder.state_dict(), rtol=0, atol=0)
    both = first.model_copy(update={"phases": stages})
    outcome = train_classifier(encoder, cfg, train, test, both, "cpu", seed=0)
    moved = [k for k, v in outcome.model.encoder.state_dict().items() if not torch.equal(v, encoder.state_dict()[k])]
    assert "blocks.0.attn.qkv.weight" in moved
    assert outcome.final.accuracy >= CHANCE_BOUND  # 7 short epochs from a random init: 0.57-0.67 over seeds 0-2
    assert [b.drop_path for b in outcome.model.encoder.blocks] == pytest.approx(np.linspace(0, 0.2, 4).tolist())


def test_reference_recipes_and_epoch_scaling(tiny_random_encoder):
    _, cfg = tiny_random_encoder
    two_stage = neural_recipe("finetune", cfg, "modelnet40_h5")
    assert [(p.epochs, p.frozen_encoder) for p in two_stage.phases] == [(50, True), (100, False)]
    assert two_stage.label_smoothing == 0.2 and two_stage.weight_decay == 0.05 and two_stage.train_aug.scale == (0.6, 1.4)
    scan = neural_recipe("finetune", cfg, "scanobjectnn")
    assert scan.epochs == 150 and scan.phases[0].peak_lr == 2e-5 and scan.train_aug.rotate_z
    assert scan.input.num_points == 2048 and scan.input.num_patches == 2 * cfg.patchify.global_patches
    short = two_stage.with_epochs(6)
    assert [p.epochs for p in short.phases] == [2, 4] and short.phases[1].warmup_epochs == pytest.approx(0.4)
    fewshot = neural_recipe("fewshot", cfg, "fewshot")
    assert fewshot.pooling == ("mean", "max") and fewshot.phases[0].peak_lr == 1e-3


def test_phase_learning_rates_follow_the_schedule():
    warm = Phase(epochs=10, frozen_encoder=False, start_lr=0.0, peak_lr=2e-5, end_lr=1e-7, warmup_epochs=2)
    assert warm.lr(0, 5) == 0.0 and warm.lr(10, 5) == pytest.approx(2e-5) and warm.lr(50, 5) == pytest.approx(1e-7)
    assert warm.lr(30, 5) == pytest.approx(1e-7 + (2e-5 - 1e-7) / 2)
    line = Phase(epochs=50, frozen_encoder=True, shape="linear", start_lr=5e-4, end_lr=5e-5)
    assert line.lr(25, 1) == pytest.approx(2.75e-4)


@pytest.mark.slow
def test_fewshot_runs_every_fold_and_seed(tmp_path, tiny_random_encoder):
    encoder, cfg = tiny_random_encoder
    root = write_fewshot_folds(tmp_path / "ModelNetFewshot", way=3, shot=8, folds=2, test_per_class=6)
    fold = fewshot_fold(str(root), 3, 8, 1)
    assert len(fold.train) == 24 and len(fold.test) == 18 and fold.info["fold"] == 1
    cfg_neural = _probe("mlp", False, 2e-3, epochs=15, pooling=("mean", "max"), batch_size=8)
    runs = fewshot_runs(encoder, cfg, str(root), FewShotConfig(way=3, shot=8, folds=[0, 1]), cfg_neural, "cpu", [0, 1])
    assert [(r.fold, r.seed) for r in runs] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert np.mean([r.accuracy for r in runs]) >= 0.7, [r.accuracy for r in runs]  # chance: 1/3


def test_fewshot_fold_pickles_that_run_code_are_refused(tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    folder = tmp_path / "3way_8shot"
    folder.mkdir()
    (folder / "0.pkl").write_bytes(pickle.dumps({"train": [Payload()], "test": []}))
    with pytest.raises(RefusedPickle, match=r"0\.pkl: refusing to unpickle .*system"):
        fewshot_fold(str(tmp_path), 3, 8, 0)
    assert not marker.exists()


@pytest.mark.slow
def test_voting_over_augmented_passes_stays_accurate(shapes_train_test, tiny_random_encoder):
    train, test = shapes_train_test
    encoder, cfg = tiny_random_encoder
    voted = train_classifier(encoder, cfg, train, test, _probe("linear", True, 1e-2, epochs=4, voting=3), "cpu", 0)
    plain = train_classifier(encoder, cfg, train, test, _probe("linear", True, 1e-2, epochs=4), "cpu", 0)
    assert voted.final.accuracy >= 0.7 and plain.final.accuracy >= 0.7
    assert len(voted.final.y_pred) == len(test)


def test_mean_std_over_runs():
    assert mean_std([0.9, 0.8, 0.7]) == {"mean": pytest.approx(0.8), "std": pytest.approx(0.1), "n": 3}
    assert mean_std([0.5]) == {"mean": 0.5, "std": 0.0, "n": 1}


def test_subsampling_keeps_the_requested_points(shapes_train_test, tiny_random_encoder):
    encoder, _ = tiny_random_encoder
    fewer = InputSpec(num_points=64, num_patches=8, patch_size=16, subsample="random")
    test = shapes_train_test[1]
    feats = extract_features(encoder, test, fewer, ("cls", "mean", "max"), "cpu", seed=3, normalize=False)
    again = extract_features(encoder, test, fewer, ("cls", "mean", "max"), "cpu", seed=3, normalize=False)
    assert feats.shape == (60, 3 * encoder.dim)
    np.testing.assert_array_equal(feats, again)
