"""The evaluation protocols and their reference recipes.

Frozen features: `svm` (LinearSVC, C = 1, on L2-normalised [CLS, mean] features: the standard
ModelNet40 protocol and the reference's pretraining monitor) and `knn` (cosine-similarity majority
vote of the k nearest training features, the reference's k-NN monitor, k = 5).
Trained heads (`train.NeuralConfig`): `linear` and `mlp` probes on the frozen encoder, `finetune`
(ScanObjectNN one stage; ModelNet40 and our shards two stages), and `fewshot` (N-way K-shot folds,
full fine-tuning of an MLP head on [mean, max]). `partseg` (part segmentation, `launch.evaluation.partseg`)
fine-tunes the encoder with a per-point head and reports mIoU instead of accuracy.

Every protocol returns one `RunResult` per seed (and fold) carrying the predictions, and for the
frozen-feature protocols the features, so callers can draw confusion matrices and embeddings
(`launch.pictures.confusion_figure`, `embedding_figure`) without re-running anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from configuration import StrictModel
from launch.evaluation.data import LabelledSet, fewshot_fold
from launch.evaluation.features import Augmentation, InputSpec, Pooling, extract_features
from launch.evaluation.train import NeuralConfig, Phase, predictions, train_classifier
from model.config import ModelConfig
from model.backbone import Backbone
from model.features import model_input

ProtocolName = Literal["svm", "knn", "linear", "mlp", "finetune", "fewshot", "partseg"]
PROTOCOLS: tuple[str, ...] = ("svm", "knn", "linear", "mlp", "finetune", "fewshot", "partseg")


@dataclass
class RunResult:
    """One seed (and fold) of one protocol."""

    seed: int
    accuracy: float
    mean_class_accuracy: float
    y_true: np.ndarray
    y_pred: np.ndarray
    fold: int | None = None
    features: dict[str, np.ndarray] | None = None  # {"train", "test"} for svm / knn
    history: list[dict] = field(default_factory=list)


class FeatureConfig(StrictModel):
    """A frozen-feature protocol: features, and the SVM's C or the kNN's k."""

    input: InputSpec = InputSpec()
    pooling: tuple[Pooling, ...] | None = Field(
        None, description="default: the backbone's feature pooling (the ViT's CLS + mean, as the reference)")
    batch_size: int = Field(32, ge=1)
    svm_c: float = Field(1.0, gt=0)
    knn_k: int = Field(5, ge=1)


def default_input(model_cfg: ModelConfig, dataset_kind: str) -> InputSpec:
    """The reference's input per dataset, in this model's patch geometry.

    ScanObjectNN keeps its 2,048 points, everything else is FPS'd to 1,024; patches scale with the
    points from the model's pretraining count (64 per 1,024 for S/B, so 128 for ScanObjectNN).
    """
    return model_input(model_cfg, 2048 if dataset_kind == "scanobjectnn" else 1024)


def _features(encoder, train, test, cfg: FeatureConfig, device, seed) -> tuple[np.ndarray, np.ndarray]:
    pooling = cfg.pooling or encoder.feature_pooling
    train_x = extract_features(encoder, train, cfg.input, pooling, device, seed, cfg.batch_size)
    test_x = extract_features(encoder, test, cfg.input, pooling, device, seed + 1, cfg.batch_size)
    return train_x, test_x


def svm_predict(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, c: float, seed: int) -> np.ndarray:
    """Test predictions of a LinearSVC(C=c) fitted on the training features."""
    from sklearn.svm import LinearSVC  # scikit-learn (and its SciPy) load when a protocol runs, not on import

    svm = LinearSVC(C=c, random_state=seed, max_iter=10_000).fit(train_x, train_y)
    return svm.predict(test_x).astype(np.int64)


def svm_run(encoder: Backbone, train: LabelledSet, test: LabelledSet, device: torch.device | str,
            seed: int = 0, cfg: FeatureConfig = FeatureConfig()) -> RunResult:
    """LinearSVC(C) on L2-normalised frozen features."""
    train_x, test_x = _features(encoder, train, test, cfg, device, seed)
    pred = predictions(test.labels, svm_predict(train_x, train.labels, test_x, cfg.svm_c, seed))
    return RunResult(seed, pred.accuracy, pred.mean_class_accuracy, pred.y_true, pred.y_pred,
                     features={"train": train_x, "test": test_x})


def svm_accuracy(encoder: Backbone, cfg: ModelConfig, train: LabelledSet, test: LabelledSet,
                 device: torch.device | str = "cpu", seed: int = 0) -> float:
    """The SVM protocol's test accuracy with this model's default input for generic point sets."""
    feature_cfg = FeatureConfig(input=default_input(cfg, "shards"))
    return svm_run(encoder, train, test, device, seed, feature_cfg).accuracy


def knn_predict(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, k: int, num_classes: int
                ) -> np.ndarray:
    """Majority vote of the k most cosine-similar training features (ties: the lowest class index)."""
    sim = torch.from_numpy(test_x) @ torch.from_numpy(train_x).T
    nearest = sim.topk(min(k, len(train_x)), dim=1).indices
    votes = torch.zeros(len(test_x), num_classes).scatter_add_(
        1, torch.from_numpy(train_y)[nearest], torch.ones(nearest.shape))
    return votes.argmax(dim=1).numpy()


def knn_run(encoder: Backbone, train: LabelledSet, test: LabelledSet, device: torch.device | str,
            seed: int = 0, cfg: FeatureConfig = FeatureConfig()) -> RunResult:
    train_x, test_x = _features(encoder, train, test, cfg, device, seed)
    pred = predictions(test.labels, knn_predict(train_x, train.labels, test_x, cfg.knn_k, len(train.class_names)))
    return RunResult(seed, pred.accuracy, pred.mean_class_accuracy, pred.y_true, pred.y_pred,
                     features={"train": train_x, "test": test_x})


# -- trained-head recipes ----------------------------------------------------------------------------

FROZEN_PROBE = Phase(epochs=150, frozen_encoder=True, start_lr=0.0, peak_lr=5e-4, end_lr=1e-7, warmup_epochs=10)
FINETUNE = Phase(epochs=150, frozen_encoder=False, start_lr=0.0, peak_lr=2e-5, end_lr=1e-7, warmup_epochs=10)
TWO_STAGE = [
    Phase(epochs=50, frozen_encoder=True, shape="linear", start_lr=5e-4, end_lr=5e-5),
    Phase(epochs=100, frozen_encoder=False, start_lr=0.0, peak_lr=2e-5, end_lr=1e-7, warmup_epochs=10),
]
FEWSHOT = Phase(epochs=150, frozen_encoder=False, start_lr=1e-7, peak_lr=1e-3, end_lr=1e-6, warmup_epochs=10)
SCANOBJECTNN_AUG = Augmentation(rotate_z=True, scale=(0.9, 1.1))
MODELNET_AUG = Augmentation(scale=(0.6, 1.4))
LVIS_AUG = Augmentation(rotate_z=True)  # the official configs/data/ObjaVerse_LVIS-S.yaml


def neural_recipe(protocol: str, model_cfg: ModelConfig, dataset_kind: str) -> NeuralConfig:
    """The reference's recipe for a trained-head protocol on a dataset kind (our shards follow ModelNet40)."""
    spec = default_input(model_cfg, dataset_kind)
    aug = {"scanobjectnn": SCANOBJECTNN_AUG, "objaverse_lvis": LVIS_AUG}.get(dataset_kind, MODELNET_AUG)
    if protocol in ("linear", "mlp"):
        return NeuralConfig(head=protocol, phases=[FROZEN_PROBE], input=spec, train_aug=aug)
    if protocol == "finetune":
        phases = [FINETUNE] if dataset_kind == "scanobjectnn" else TWO_STAGE
        return NeuralConfig(head="mlp", phases=phases, input=spec, train_aug=aug)
    if protocol == "fewshot":
        return NeuralConfig(head="mlp", pooling=("mean", "max"), phases=[FEWSHOT], input=spec, train_aug=MODELNET_AUG)
    raise ValueError(f"protocol {protocol!r} has no trained head (choose from linear, mlp, finetune, fewshot)")


def neural_run(encoder: Backbone, model_cfg: ModelConfig, train: LabelledSet, test: LabelledSet,
               cfg: NeuralConfig, device: torch.device | str, seed: int, fold: int | None = None) -> RunResult:
    outcome = train_classifier(encoder, model_cfg, train, test, cfg, device, seed)
    p = outcome.final
    return RunResult(seed, p.accuracy, p.mean_class_accuracy, p.y_true, p.y_pred, fold=fold, history=outcome.history)


class FewShotConfig(StrictModel):
    """The N-way K-shot task and which of its folds to run."""

    way: int = Field(5, ge=2)
    shot: int = Field(10, ge=1)
    folds: list[int] = Field(default_factory=lambda: list(range(10)), min_length=1)


def fewshot_runs(encoder: Backbone, model_cfg: ModelConfig, path: str, fewshot: FewShotConfig,
                 cfg: NeuralConfig, device: torch.device | str, seeds: list[int],
                 storage_options: dict | None = None) -> list[RunResult]:
    """Fine-tune and test on every requested fold of the N-way K-shot task, for every seed."""
    runs = []
    for fold in fewshot.folds:
        pair = fewshot_fold(path, fewshot.way, fewshot.shot, fold, storage_options)
        for seed in seeds:
            runs.append(neural_run(encoder, model_cfg, pair.train, pair.test, cfg, device, seed, fold))
    return runs
