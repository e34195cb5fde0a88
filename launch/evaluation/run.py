"""One evaluation job: encoder source + data + protocol + seeds -> report (JSON and MLflow).

`EvalConfig` is what `python -m launch.evaluate` reads (`load_eval_config`: a YAML file, then its flags);
`run_evaluation` is the same job for Python callers. Defaults are the reference's recipes; `epochs`,
`batch_size` and the input overrides exist so that small data and tests run in seconds.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from pydantic import Field, model_validator

from configuration import StrictModel, load_config
from launch.evaluation.data import LabelledDataConfig, load_dataset
from launch.evaluation.encoders import load_encoder_source
from launch.evaluation.features import InputOverrides, InputSpec
from launch.evaluation.part_data import load_part_dataset
from launch.evaluation.partseg import PartSegConfig, train_segmenter
from launch.evaluation.protocols import (
    FeatureConfig,
    FewShotConfig,
    ProtocolName,
    RunResult,
    default_input,
    fewshot_runs,
    knn_run,
    neural_recipe,
    neural_run,
    svm_run,
)
from launch.evaluation.report import DEFAULT_EXPERIMENT, build_part_report, build_report, log_report, write_report
from launch.evaluation.train import NeuralConfig
from launch.tracking import tracking_uri
from model.config import ModelConfig
from model.features import model_input

WHAT = "evaluation config"


class MlflowConfig(StrictModel):
    enabled: bool = True
    tracking_uri: str | None = Field(None, description="default: $MLFLOW_TRACKING_URI, else the pretraining run's "
                                                         "store (from the export), else sqlite next to the report")
    experiment: str = DEFAULT_EXPERIMENT
    run_name: str | None = None


class EvalConfig(StrictModel):
    """One evaluation job: the encoder, the data, the protocol and its seeds, where results go."""

    encoder: str | None = Field(None, description="export directory (model.export)")
    official_ckpt: str | None = Field(None, description="a published AsymDSD Lightning .ckpt")
    branch: str = "teacher"
    model_config_path: str | None = Field(None, description="architecture of an official checkpoint (default: inferred)")
    random_init: bool = Field(False, description="same architecture, re-initialised weights: the no-pretraining baseline")
    protocol: ProtocolName
    dataset: LabelledDataConfig | None = None
    fewshot_path: str | None = None
    fewshot: FewShotConfig = FewShotConfig()
    seeds: int = Field(1, ge=1, description="runs with seeds 0..seeds-1")
    device: str = "cpu"
    epochs: int | None = Field(None, ge=1, description="total epochs of a trained-head protocol (phases scaled)")
    batch_size: int | None = Field(None, ge=2)
    voting: int = Field(1, ge=1)
    eval_every: int = Field(0, ge=0)
    knn_k: int = Field(5, ge=1)
    svm_c: float = Field(1.0, gt=0)
    input: InputOverrides = InputOverrides()
    report: str = "evaluation.json"
    mlflow: MlflowConfig = MlflowConfig()

    @model_validator(mode="after")
    def _sources(self) -> EvalConfig:
        if (self.encoder is None) == (self.official_ckpt is None):
            raise ValueError("give exactly one of encoder (an export directory) and official_ckpt")
        if self.protocol == "fewshot" and not self.fewshot_path:
            raise ValueError("protocol fewshot needs fewshot_path (the ModelNetFewshot folder or zip)")
        if self.protocol != "fewshot" and self.dataset is None:
            raise ValueError(f"protocol {self.protocol} needs a dataset (KIND:PATH)")
        if self.voting > 1 and self.protocol in ("svm", "knn", "partseg"):
            raise ValueError("voting applies to the trained-head classifiers only (linear, mlp, finetune, fewshot)")
        return self


def load_eval_config(path: str | os.PathLike | None, overrides: Sequence[str] = ()) -> EvalConfig:
    """A YAML evaluation config (or none: the defaults) with `a.b=value` overrides applied, validated."""
    return load_config(EvalConfig, path, overrides, what=WHAT)


def _input(cfg: EvalConfig, model_cfg: ModelConfig, dataset_kind: str) -> InputSpec:
    return cfg.input.apply(default_input(model_cfg, dataset_kind))


def _neural_config(cfg: EvalConfig, model_cfg: ModelConfig, dataset_kind: str, encoder) -> NeuralConfig:
    recipe = neural_recipe(cfg.protocol, model_cfg, dataset_kind)
    if cfg.epochs is not None:
        recipe = recipe.with_epochs(cfg.epochs)
    update = {"input": _input(cfg, model_cfg, dataset_kind), "voting": cfg.voting, "eval_every": cfg.eval_every,
              "pooling": recipe.pooling_for(encoder)}
    if cfg.batch_size is not None:
        update["batch_size"] = cfg.batch_size
    return recipe.model_copy(update=update)


def run_protocol(cfg: EvalConfig, encoder, model_cfg: ModelConfig) -> tuple[list[RunResult], tuple[str, ...], dict, dict]:
    """(runs, class names, dataset info, the protocol's resolved settings)."""
    seeds = list(range(cfg.seeds))
    if cfg.protocol == "fewshot":
        neural = _neural_config(cfg, model_cfg, "fewshot", encoder)
        runs = fewshot_runs(encoder, model_cfg, cfg.fewshot_path, cfg.fewshot, neural, cfg.device, seeds)
        info = {"kind": "fewshot", "path": cfg.fewshot_path, **cfg.fewshot.model_dump()}
        return runs, tuple(f"class_{i}" for i in range(cfg.fewshot.way)), info, neural.model_dump(mode="json")
    data = load_dataset(cfg.dataset)
    if cfg.protocol in ("svm", "knn"):
        feats = FeatureConfig(input=_input(cfg, model_cfg, cfg.dataset.kind), pooling=encoder.feature_pooling,
                              svm_c=cfg.svm_c, knn_k=cfg.knn_k, batch_size=cfg.batch_size or 32)
        run = svm_run if cfg.protocol == "svm" else knn_run
        runs = [run(encoder, data.train, data.test, cfg.device, seed, feats) for seed in seeds]
        settings = feats.model_dump(mode="json")
    else:
        neural = _neural_config(cfg, model_cfg, cfg.dataset.kind, encoder)
        runs = [neural_run(encoder, model_cfg, data.train, data.test, neural, cfg.device, seed) for seed in seeds]
        settings = neural.model_dump(mode="json")
    info = {**data.info, "train_size": len(data.train), "test_size": len(data.test)}
    return runs, data.train.class_names, info, settings


def partseg_config(cfg: EvalConfig, model_cfg: ModelConfig) -> PartSegConfig:
    """The reference recipe in this model's patch geometry (2,048 random points, patches scaled from the
    pretraining count), with the job's epochs, batch size, test cadence and input overrides."""
    spec = cfg.input.apply(model_input(model_cfg, 2048).model_copy(update={"subsample": "random"}))
    seg = PartSegConfig(input=spec, eval_every=cfg.eval_every)
    if cfg.epochs is not None:
        seg = seg.with_epochs(cfg.epochs)
    return seg.model_copy(update={"batch_size": cfg.batch_size} if cfg.batch_size else {})


def run_partseg(cfg: EvalConfig, encoder, model_cfg: ModelConfig, meta: dict) -> tuple[dict[str, Any], list]:
    """(report, runs) of the part-segmentation protocol."""
    data = load_part_dataset(cfg.dataset)
    seg = partseg_config(cfg, model_cfg)
    runs = [train_segmenter(encoder, model_cfg, data.train, data.test, seg, cfg.device, s) for s in range(cfg.seeds)]
    info = {**data.info, "train_size": len(data.train), "test_size": len(data.test)}
    report = build_part_report(runs, data.train.class_names, data.train.part_names, info, meta,
                               {"job": cfg.model_dump(mode="json"), "protocol": seg.model_dump(mode="json")})
    return report, runs


def evaluation_uri(cfg: EvalConfig, encoder_meta: dict[str, Any]) -> str:
    """Where the evaluation run goes: the configured store, else $MLFLOW_TRACKING_URI, else the pretraining
    run's store (an export records it), else a sqlite file next to the report."""
    configured = cfg.mlflow.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    return tracking_uri(configured or encoder_meta.get("mlflow_tracking_uri"), Path(cfg.report).resolve().parent)


def run_evaluation(cfg: EvalConfig) -> tuple[dict[str, Any], list]:
    """Run the configured protocol; write the JSON report and (unless disabled) the MLflow run."""
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {cfg.device} requested but CUDA is not available")
    encoder, model_cfg, meta = load_encoder_source(cfg.encoder, cfg.official_ckpt, cfg.branch, cfg.model_config_path,
                                                   cfg.random_init, cfg.device)
    meta = {**meta, "model": model_cfg.name}
    if cfg.protocol == "partseg":
        report, runs = run_partseg(cfg, encoder, model_cfg, meta)
    else:
        runs, class_names, dataset_info, settings = run_protocol(cfg, encoder, model_cfg)
        report = build_report(cfg.protocol, cfg.voting, runs, class_names, dataset_info, meta,
                              {"job": cfg.model_dump(mode="json"), "protocol": settings})
    if cfg.mlflow.enabled:
        uri = evaluation_uri(cfg, meta)
        report["mlflow_run_id"] = log_report(report, uri, cfg.mlflow.experiment, cfg.mlflow.run_name)
    write_report(report, cfg.report)
    return report, runs
