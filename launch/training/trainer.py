"""The pretraining loop: build, then per optimizer step load -> prepare -> teacher -> engine -> EMA -> log -> checkpoint.

Why the result does not depend on how the global batch is laid out over ranks and micro-batches:
schedules are functions of the optimizer step (`launch.training.optim`); centres update once per
optimizer step with the mean over the global batch (`model.centering`); the model's randomness (FPS
starts, masks, drop path) is reseeded per micro-batch from the samples it is applied to
(`launch.training.step`). So one process with k micro-batches per step computes what k ranks
compute, and a resumed run needs no RNG state: the same step sees the same samples, crops, masks and
drop paths.

Precision (`launch.training.precision`): the engine holds fp32 weights, teacher and student forwards
run under autocast to `train.precision`, the EMA reads the fp32 student, and fp16 steps are loss-scaled.

Before the model is built, the micro-batch is checked against free memory (`launch.training.memory`);
the data, directories and checkpoint were checked before the process group started
(`launch.training.preflight`). Samples skipped for unusable shards and shard read retries are counted
over all ranks, kept in checkpoints, and reported with the result.

SIGTERM or SIGINT (a preempted pod, Ctrl-C) stops every rank after the same step with a checkpoint there
and a clean exit; the MLflow run is left KILLED until a resume continues it (`launch.training.preemption`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from configuration import ConfigError
from launch.training.checkpoint import Checkpointer, ClientState
from launch.training.collapse import CollapseAlarm, target_metrics
from launch.training.config import PretrainConfig, deepspeed_config
from launch.training.distributed import DistEnv, mean_over_ranks, sum_over_ranks
from launch.training.memory import check_micro_batch, free_bytes
from launch.training.monitor import Monitor, ProbeResult, load_probe_set
from launch.training.optim import Schedule, SkippableAdamW, StepValues
from launch.training.precision import DynamicLossScale, LossScaling, autocast_dtype, resolve_precision
from launch.training.preemption import MLFLOW_STATUS, Preemption
from launch.training.preflight import Inputs
from launch.training.run_log import RunLog
from launch.training.step import SkippedSteps, StepOutcome, TrainStep
from launch.training.throughput import Throughput, peak_flops
from model.export import export_encoder
from model.flops import training_flops
from model.methods import build_method
from pipeline.loader import Batch, epoch_order, make_loader
from pipeline.metrics import LoaderMeter
from pipeline.order import LoaderState


@dataclass
class RunResult:
    steps: int
    mlflow_run_id: str | None
    export_dir: Path | None
    last_loss: float | None
    samples_skipped: int = 0  # over all ranks: samples replaced because their shard was unusable
    read_retries: int = 0  # over all ranks: shard reads retried after a transient error
    preempted: bool = False  # stopped by a signal after `steps`, with a checkpoint there


@dataclass
class DataFaults:
    """Samples skipped and shard read retries: over all ranks before this launch, and on this rank since."""

    samples_skipped: int = 0
    read_retries: int = 0
    here: tuple[int, int] = field(default=(0, 0), init=False)

    def count(self, batch: Batch) -> None:
        self.here = (self.here[0] + batch.skipped, self.here[1] + batch.retries)

    def totals(self, device: torch.device) -> tuple[int, int]:
        """(samples skipped, read retries) over all ranks and launches; every rank calls it."""
        skipped, retries = sum_over_ranks(list(self.here), device)
        return self.samples_skipped + skipped, self.read_retries + retries


class Pretrainer:
    """Everything a run needs is built in `__init__` (resuming from a checkpoint if asked); `run` trains."""

    def __init__(self, cfg: PretrainConfig, env: DistEnv, inputs: Inputs) -> None:
        import deepspeed

        self.cfg, self.env = cfg, env
        t = cfg.train
        try:
            self.precision = resolve_precision(t.precision, env.device)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        self.ds_config = deepspeed_config(cfg, env.world_size)
        check_micro_batch(cfg, self.ds_config["train_micro_batch_size_per_gpu"], self.precision,
                          free_bytes(env.device, env.local_world_size))
        if env.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = t.tf32
            torch.backends.cudnn.allow_tf32 = t.tf32

        torch.manual_seed(t.seed)  # identical initial weights on every rank (DeepSpeed broadcasts rank 0's too)
        self.model = build_method(cfg.model)
        self.model.teacher.to(env.device)
        self.model.set_autocast(autocast_dtype(self.precision))
        if t.compile:
            self.model.compile()

        self.data, self.patches = cfg.crop_data(), cfg.loader_patches()
        self.manifests = inputs.manifests
        first = epoch_order(self.data, self.manifests, t.seed, 0, t.global_batch)
        self.steps_per_epoch = first.num_steps
        self.schedule = Schedule(cfg, self.steps_per_epoch)
        self.last_step = min(self.schedule.total_steps, t.max_steps or self.schedule.total_steps)
        self.monitor = Monitor(cfg.monitor, [load_probe_set(s, cfg.model) for s in cfg.monitor.sets], env,
                               self.steps_per_epoch, self.last_step, t.seed)

        o = cfg.optim
        self.optimizer = SkippableAdamW(self.model.student.parameters(), lr=o.lr_start, betas=tuple(o.betas),
                                        eps=o.eps, weight_decay=o.weight_decay)
        self.engine, *_ = deepspeed.initialize(model=self.model.student, optimizer=self.optimizer,
                                               config=self.ds_config)
        loss_scaling = LossScaling(self.engine, DynamicLossScale()) if self.precision == "fp16" else None
        self.train_step = TrainStep(self.model, self.engine, self.optimizer, loss_scaling, t.seed, env.device)
        self.skipped = SkippedSteps(t.max_nonfinite_steps)
        self.faults = DataFaults()
        self.collapse = CollapseAlarm(cfg.monitor.collapse, cfg.model.head.num_prototypes)
        self.checkpointer = Checkpointer(cfg.checkpoint, cfg.checkpoint_dir(), self.engine, env)
        self.preemption = Preemption(cfg.checkpoint.preemption_grace_s, env)

        self.step, self.loader_state = 0, None
        restored = None if inputs.resume is None else self.checkpointer.load(*inputs.resume)
        if restored is not None:
            self._restore(restored)
        self.run_log = RunLog(cfg, env, self.manifests, self.ds_config, {
            "steps_per_epoch": str(self.steps_per_epoch), "total_steps": str(self.schedule.total_steps),
            "samples_per_epoch": str(first.num_samples), "grad_accum": str(self.train_step.grad_accum),
            "precision": self.precision,
        }, None if restored is None else restored.mlflow_run_id, self.step)
        self.best_probe = {key: self.run_log.latest_metric(f"{key}/best") for key in self._probe_keys()}
        peak = peak_flops(env.device, t.peak_tflops, self.precision, t.tf32)
        local = cfg.data.local_crops
        crop_points = (cfg.data.global_crops.points, 0 if local is None else local.points)
        flops = training_flops(cfg.model, t.global_batch // env.world_size // self.train_step.grad_accum,
                               crop_points).per_shape
        self.throughput = Throughput(t.global_batch, env.world_size, peak, flops)
        self.started = (time.monotonic(), self.step)  # for the console's elapsed time and ETA
        self.probe_seconds = (0.0, 0.0)  # this launch's feature passes: in all, and the last one

    def run(self) -> RunResult:
        status, last_loss, export_dir = "FAILED", None, None
        try:
            last_loss = self._train()
            self._log_probes(self.monitor.results(wait=True))
            skipped, retries = self.faults.totals(self.env.device)
            if self.preemption.stopping:
                self.run_log.set_tags({"preempted_at_step": str(self.step)})
                status = MLFLOW_STATUS
                return RunResult(self.step, self.run_log.run_id, None, last_loss, skipped, retries, preempted=True)
            if self.env.is_main:
                export_dir = self._export(Path(self.cfg.output_dir) / "export")
                self.run_log.log_encoder(export_dir)
            status = "FINISHED"
            return RunResult(self.step, self.run_log.run_id, export_dir, last_loss, skipped, retries)
        finally:
            self.monitor.close()
            self.run_log.finish(status)

    def _train(self) -> float | None:
        cfg, env, last_loss = self.cfg, self.env, None
        if self.step == 0 and self.monitor.due(0):
            self._probe()
        while self.step < self.last_step:
            epoch, in_epoch = divmod(self.step, self.steps_per_epoch)
            state, self.loader_state = self.loader_state, None  # a checkpoint's position applies to one epoch
            if state is not None and (state.epoch, state.step) != (epoch, in_epoch):
                raise RuntimeError(f"checkpoint loader state {state} does not match step {self.step} "
                                   f"(epoch {epoch}, step {in_epoch} in epoch)")
            loader, order = make_loader(self.data, self.patches, cfg.train.seed, self.manifests, epoch,
                                        cfg.train.global_batch, env.rank, env.world_size, state,
                                        pin_memory=env.device.type == "cuda")
            meter = LoaderMeter(loader)
            self.throughput.new_meter(meter)
            for batch in meter:
                values = self.schedule.at(self.step)
                outcome = self.train_step(batch, epoch, values, observe=self._logs(self.step + 1))
                self.step += 1
                self.faults.count(batch)
                self._record_skip(outcome)
                if self._logs(self.step) or self.skipped.exhausted:
                    last_loss = self._log(outcome, values)
                self.skipped.stop_if_exhausted(self.step)
                saved = None
                if self.checkpointer.due(self.step, self.last_step):
                    saved = self.checkpointer.save(self._client_state(order.state(batch.step + 1)), self._export)
                # every rank after every step but the last: a signal may reach only some ranks
                if self.step < self.last_step and self.preemption.agreed():
                    if saved is None:
                        saved = self.checkpointer.save(self._client_state(order.state(batch.step + 1)), self._export)
                    self.preemption.report(self.step, saved)
                    return last_loss
                if self.monitor.due(self.step):  # after the stop check: a stop never waits for a probe
                    self._probe()
                self._log_probes(self.monitor.results())
                if self.step >= self.last_step:
                    break
        return last_loss

    def _logs(self, step: int) -> bool:
        """Whether optimizer step `step` (counted from 1) is logged, known before it runs: the target
        statistics are gathered on these steps only. A step that stops the job is logged too, without them."""
        return step % self.cfg.train.log_every == 0 or step == self.last_step

    def _record_skip(self, outcome: StepOutcome) -> None:
        scaling = self.train_step.loss_scaling
        message = self.skipped.record(self.step, outcome, None if scaling is None else scaling.scale.scale)
        if message is not None and self.env.is_main:
            print(f"[pretrain] {message}", flush=True)

    def _log(self, outcome: StepOutcome, values: StepValues) -> float:
        losses = mean_over_ranks({f"loss/{k}": v for k, v in outcome.terms.items()}, self.env.device)
        targets = {} if outcome.targets is None else target_metrics(outcome.targets, losses)
        metrics = {**losses, **targets, **values.as_metrics(), **self.throughput.metrics(),
                   "train/epoch": self.step / self.steps_per_epoch,
                   "train/nonfinite_steps": float(self.skipped.total)}
        if outcome.grad_norm is not None and math.isfinite(outcome.grad_norm):
            metrics["opt/grad_norm"] = outcome.grad_norm
        if self.train_step.loss_scaling is not None:
            metrics["opt/loss_scale"] = self.train_step.loss_scaling.scale.scale
        if self.env.is_main:
            self.run_log.log_metrics(metrics, self.step)
            print(f"[pretrain] step {self.step}/{self.last_step} {console_losses(losses)} "
                  f"epoch {self.step / self.steps_per_epoch:.2f} lr {values.lr:.3g} "
                  f"{metrics['throughput/samples_per_s']:.4g} shapes/s data-wait {metrics['data/wait_fraction']:.0%} "
                  f"{self._timing()}", flush=True)
        self._watch_collapse(metrics)
        return metrics["loss/total"]

    def _timing(self) -> str:
        """Time since this launch started, and the time left: the remaining steps at this launch's pace
        (probes left out) plus the remaining probes at the last one's cost."""
        since, first = self.started
        elapsed = time.monotonic() - since
        pace = (elapsed - self.probe_seconds[0]) / max(self.step - first, 1)
        eta = pace * (self.last_step - self.step) + self.probe_seconds[1] * self.monitor.passes_after(self.step)
        return f"{duration(elapsed)} elapsed, ETA {duration(eta)}"

    # -- downstream probes ----------------------------------------------------------------------------

    def _probe_keys(self) -> list[str]:
        return [f"monitor/{s.name}/{p}" for s in self.cfg.monitor.sets for p in self.cfg.monitor.protocols]

    def _probe(self) -> None:
        """The teacher's features for every monitor set (all ranks); the time is kept out of the throughput."""
        seconds = self.monitor.probe(self.model.teacher.encoder, self.step, autocast_dtype(self.precision))
        self.throughput.exclude(seconds)
        self.probe_seconds = (self.probe_seconds[0] + seconds, seconds)

    def _log_probes(self, results: list[ProbeResult]) -> None:
        """Log scored probes at the step they describe, with the best value so far (rank 0 only)."""
        for result in results:
            metrics = {f"monitor/{result.name}/seconds": result.seconds}
            for protocol, accuracy in result.accuracy.items():
                key = f"monitor/{result.name}/{protocol}"
                metrics[key] = accuracy
                if self.best_probe.get(key) is None or accuracy > self.best_probe[key]:
                    self.best_probe[key] = metrics[f"{key}/best"] = accuracy
            self.run_log.log_metrics(metrics, result.step)
            scores = " ".join(f"{p} {a:.1%}" for p, a in result.accuracy.items())
            print(f"[pretrain] monitor {result.name} at step {result.step}: {scores} ({result.seconds:.1f} s)",
                  flush=True)

    def _watch_collapse(self, metrics: dict[str, float]) -> None:
        """On rank 0: one warning line per head whose targets look collapsed (`monitor.collapse`), and a run tag."""
        if self.env.is_main and (alarms := self.collapse.update(self.step, metrics)):
            for alarm in alarms:
                print(f"[pretrain] warning: {alarm.message()}", flush=True)
            self.run_log.set_tags(self.collapse.tags())

    # -- checkpoint state and the encoder export -------------------------------------------------------

    def _client_state(self, loader: LoaderState) -> ClientState:
        scaling = self.train_step.loss_scaling
        skipped, retries = self.faults.totals(self.env.device)
        return ClientState(step=self.step, loader=loader.to_dict(), teacher=self.model.teacher.state_dict(),
                           mlflow_run_id=self.run_log.run_id, nonfinite_total=self.skipped.total,
                           nonfinite_streak=self.skipped.streak,
                           loss_scale=None if scaling is None else scaling.scale.state_dict(),
                           samples_skipped=skipped, read_retries=retries)

    def _restore(self, state: ClientState) -> None:
        self.model.teacher.load_state_dict(state.teacher)
        self.step, self.loader_state = state.step, LoaderState.from_dict(state.loader)
        self.skipped.total, self.skipped.streak = state.nonfinite_total, state.nonfinite_streak
        self.faults = DataFaults(state.samples_skipped, state.read_retries)
        scaling = self.train_step.loss_scaling
        if scaling is not None and state.loss_scale is not None:
            scaling.scale = DynamicLossScale.from_state_dict(state.loss_scale)

    def _export(self, out: Path) -> Path:
        meta = {
            "step": self.step, "epoch": self.step // self.steps_per_epoch, "config_name": self.cfg.name,
            "mlflow_run_id": self.run_log.run_id, "mlflow_tracking_uri": self.run_log.public_uri, "manifest_digests": [m.digest for m in self.manifests],
            "source": "teacher encoder (EMA)",
        }
        return export_encoder(self.model.teacher.encoder, self.cfg.model, out, meta)


def console_losses(losses: dict[str, float]) -> str:
    """`loss 6.130 (cls 5.234 patch 7.012)`: the total and its terms at 4 significant digits."""
    terms = " ".join(f"{k.removeprefix('loss/')} {significant(v)}" for k, v in losses.items() if k != "loss/total")
    return f"loss {significant(losses['loss/total'])}" + (f" ({terms})" if terms else "")


def significant(value: float, digits: int = 4) -> str:
    """`value` to `digits` significant digits, trailing zeros kept (6.130, 0.02208, 1.000e-05, nan)."""
    return f"{value:#.{digits}g}".rstrip(".")


def duration(seconds: float) -> str:
    """`42s`, `3m05s`, `2h07m`: a console time span."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
