"""The pretraining loop: loader -> AsymDSD step through the DeepSpeed engine -> EMA teacher -> MLflow.

One optimizer step takes the rank's share of one global batch from the loader and splits it into
`gradient_accumulation_steps` micro-batches. Per micro-batch the teacher (fp32, outside the engine)
makes the targets, the engine runs the student forward and backward; at the boundary the engine
steps the client AdamW, then the teacher EMA and the centre updates close the step.

Why the result does not depend on how the global batch is laid out over ranks and micro-batches:
* schedules are functions of the optimizer step (launch/optim.py), from the global batch;
* centres update once per optimizer step with the mean over the global batch (model/centering.py);
* the model's own randomness (FPS starts, masks, drop path) is reseeded per micro-batch from
  (seed, epoch, global position of its first sample), i.e. from the samples it is applied to.
So a 1-process run with k micro-batches per step computes what k ranks compute, and a resumed run
needs no RNG state: the same step sees the same samples, crops, masks and drop paths.

Precision (launch/precision.py): the engine holds fp32 weights, teacher and student forwards run
under autocast to `train.precision` (`AsymDSD.set_autocast`), the EMA reads the fp32 student, and
fp16 steps are loss-scaled.

Non-finite losses and fp16 overflows: each step's flag is agreed over ranks at the boundary; a bad
step is skipped as a whole (AdamW leaves weights and moments alone, teacher and centres do not move),
counted, and the job stops after `train.max_nonfinite_steps` bad steps in a row.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from launch import checkpoint as ckpt
from launch.config import PretrainConfig, deepspeed_config
from launch.distributed import DistEnv, all_true, broadcast_object, mean_over_ranks, rank0_decides
from launch.export import export_encoder
from launch.optim import Schedule, SkippableAdamW, StepValues
from launch.precision import DynamicLossScale, LossScaling, autocast_dtype, resolve_precision
from launch.throughput import Throughput, peak_flops
from launch.tracking import NodeSystemMetrics, Tracker, flatten, git_commit, redact, tracking_uri
from model.asymdsd import AsymDSD
from model.config import ConfigError
from model.flops import training_flops
from pipeline.loader import Batch, epoch_order, load_manifests, make_loader
from pipeline.metrics import LoaderMeter
from pipeline.order import LoaderState


class NonFiniteLossError(RuntimeError):
    pass


@dataclass
class StepOutcome:
    terms: dict[str, torch.Tensor]  # loss terms averaged over the step's micro-batches
    applied: bool
    grad_norm: float | None  # pre-clipping global norm, where it is known


@dataclass
class RunResult:
    steps: int
    mlflow_run_id: str | None
    export_dir: Path | None
    last_loss: float | None


def micro_batch_seed(seed: int, epoch: int, position: int) -> int:
    """The model-side RNG seed of a micro-batch, from the global position of its first sample."""
    return int(np.random.SeedSequence([seed, epoch, position, 0x5EED]).generate_state(1, np.uint64)[0] >> 1)


class Pretrainer:
    def __init__(self, cfg: PretrainConfig, env: DistEnv, resume: str | None = None) -> None:
        import deepspeed

        self.cfg, self.env = cfg, env
        t = cfg.train
        try:
            self.precision = resolve_precision(t.precision, env.device)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        if env.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = t.tf32
            torch.backends.cudnn.allow_tf32 = t.tf32
        torch.manual_seed(t.seed)  # identical initial weights on every rank (DeepSpeed broadcasts rank 0's too)
        self.model = AsymDSD(cfg.model)
        self.model.teacher.to(env.device)
        self.model.set_autocast(autocast_dtype(self.precision))
        if t.compile:
            self.model.compile()

        self.loader_cfg = cfg.loader_config()
        self.manifests = load_manifests(self.loader_cfg)
        first = epoch_order(self.loader_cfg, self.manifests, 0, t.global_batch)
        self.steps_per_epoch = first.num_steps
        self.samples_per_epoch = first.num_samples
        self.schedule = Schedule(cfg, self.steps_per_epoch)
        self.last_step = min(self.schedule.total_steps, t.max_steps or self.schedule.total_steps)

        o = cfg.optim
        self.optimizer = SkippableAdamW(self.model.student.parameters(), lr=o.lr_start, betas=tuple(o.betas),
                                        eps=o.eps, weight_decay=o.weight_decay)
        self.ds_config = deepspeed_config(cfg, env.world_size)
        self.grad_accum = self.ds_config["gradient_accumulation_steps"]
        self.engine, *_ = deepspeed.initialize(model=self.model.student, optimizer=self.optimizer,
                                               config=self.ds_config)
        self.generator = torch.Generator(env.device)
        self.loss_scaling = LossScaling(self.engine, DynamicLossScale()) if self.precision == "fp16" else None

        self.step = 0
        self.loader_state: LoaderState | None = None
        self.nonfinite_total = self.nonfinite_streak = 0
        self._last_save = time.monotonic()
        run_id = None
        self.ckpt_dir = cfg.checkpoint_dir()
        if resume is not None:
            found = ckpt.resolve_resume(resume, self.ckpt_dir)
            if found is not None:
                run_id = self._load(*found)
        self.tracker: Tracker | None = None
        self.system_metrics: NodeSystemMetrics | None = None
        self._start_tracking(run_id)
        peak = peak_flops(env.device, t.peak_tflops, self.precision, t.tf32)
        flops = training_flops(cfg.model, t.global_batch // env.world_size // self.grad_accum).per_shape
        self.throughput = Throughput(t.global_batch, env.world_size, peak, flops)

    # -- checkpoints ---------------------------------------------------------------------------------

    def _load(self, load_dir: Path, tag: str) -> str | None:
        path, client = self.engine.load_checkpoint(str(load_dir), tag=tag, load_module_strict=True,
                                                   load_optimizer_states=True, load_lr_scheduler_states=False)
        if path is None:
            raise FileNotFoundError(f"checkpoint {load_dir / tag} could not be loaded")
        state = ckpt.ClientState.from_dict(client, str(load_dir / tag))
        self.model.teacher.load_state_dict(state.teacher)
        self.step = state.step
        self.loader_state = LoaderState.from_dict(state.loader)
        self.nonfinite_total, self.nonfinite_streak = state.nonfinite_total, state.nonfinite_streak
        if self.loss_scaling is not None and state.loss_scale is not None:
            self.loss_scaling.scale = DynamicLossScale.from_state_dict(state.loss_scale)
        if self.env.is_main:
            print(f"[pretrain] resumed from {load_dir / tag} at step {self.step}", flush=True)
        return state.mlflow_run_id

    def save_checkpoint(self, order_state: LoaderState) -> Path:
        tag = ckpt.tag_for(self.step)
        state = ckpt.ClientState(
            step=self.step, loader=order_state.to_dict(), teacher=self.model.teacher.state_dict(),
            mlflow_run_id=self._run_id,
            nonfinite_total=self.nonfinite_total, nonfinite_streak=self.nonfinite_streak,
            loss_scale=None if self.loss_scaling is None else self.loss_scaling.scale.state_dict(),
        )
        self.engine.save_checkpoint(str(self.ckpt_dir), tag=tag, client_state=state.to_dict())
        if self.env.is_main:
            self._export(self.ckpt_dir / tag / ckpt.TEACHER_EXPORT)
        ckpt.barrier()
        if self.env.is_node_main:
            ckpt.prune(self.ckpt_dir, self.cfg.checkpoint.keep_last)
        self._last_save = time.monotonic()
        return self.ckpt_dir / tag

    def _export(self, out: Path) -> Path:
        meta = {
            "step": self.step, "epoch": self.step // self.steps_per_epoch, "config_name": self.cfg.name,
            "mlflow_run_id": self._run_id, "manifest_digests": [m.digest for m in self.manifests],
            "source": "teacher encoder (EMA)",
        }
        return export_encoder(self.model.teacher.encoder, self.cfg.model, out, meta)

    # -- tracking ------------------------------------------------------------------------------------

    def _start_tracking(self, run_id: str | None) -> None:
        cfg = self.cfg
        if not cfg.mlflow.enabled:
            self._run_id = None
            return
        uri = tracking_uri(cfg.mlflow.tracking_uri, cfg.output_dir)
        if self.env.is_main:
            Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
            tags = {"world_size": str(self.env.world_size), "device": self.env.device.type,
                    "manifest_digests": ",".join(m.digest for m in self.manifests), "config_name": cfg.name}
            commit = git_commit()
            if commit:
                tags["git_commit"] = commit
            self.tracker = Tracker(uri, cfg.mlflow.experiment, run_id, cfg.mlflow.run_name, tags)
            public = redact(cfg.model_dump(mode="json"))
            if not self.tracker.resumed:
                self.tracker.log_params(flatten(public))
                self.tracker.log_dict(public, "config/pretrain.yaml")
                self.tracker.log_dict(redact(self.ds_config), "config/deepspeed.json")
                for i, m in enumerate(self.manifests):
                    self.tracker.log_dict({"url": m.url, "digest": m.digest, "num_shards": len(m.shards),
                                           "num_samples": m.num_samples}, f"data/dataset-{i}.json")
                self.tracker.log_params({"derived.steps_per_epoch": str(self.steps_per_epoch),
                                         "derived.total_steps": str(self.schedule.total_steps),
                                         "derived.samples_per_epoch": str(self.samples_per_epoch),
                                         "derived.grad_accum": str(self.grad_accum),
                                         "derived.precision": self.precision})
            else:
                self.tracker.log_dict(public, f"config/pretrain-resumed-at-step{self.step}.yaml")
                self.tracker.set_tags({"resumed_at_step": str(self.step)})
        self._run_id = broadcast_object(self.tracker.run_id if self.tracker else None)
        if cfg.mlflow.system_metrics and self.env.is_node_main:
            self.system_metrics = NodeSystemMetrics(uri, self._run_id, self.env.node_rank,
                                                    cfg.mlflow.system_metrics_interval_s)

    # -- training ------------------------------------------------------------------------------------

    def run(self) -> RunResult:
        status, last_loss = "FAILED", None
        try:
            last_loss = self._train()
            export_dir = None
            if self.env.is_main:
                export_dir = self._export(Path(self.cfg.output_dir) / "export")
                if self.tracker is not None:
                    self.tracker.log_dir(export_dir, "encoder")
            status = "FINISHED"
            return RunResult(self.step, self._run_id, export_dir, last_loss)
        finally:
            if self.system_metrics is not None:
                self.system_metrics.stop()
            if self.tracker is not None:
                self.tracker.finish(status)

    def _train(self) -> float | None:
        cfg, env = self.cfg, self.env
        self._last_save = time.monotonic()
        last_loss = None
        state = self.loader_state
        while self.step < self.last_step:
            epoch, in_epoch = divmod(self.step, self.steps_per_epoch)
            if state is not None and (state.epoch, state.step) != (epoch, in_epoch):
                raise RuntimeError(f"checkpoint loader state {state} does not match step {self.step} "
                                   f"(epoch {epoch}, step {in_epoch} in epoch)")
            loader, order = make_loader(self.loader_cfg, self.manifests, epoch, cfg.train.global_batch, env.rank,
                                        env.world_size, cfg.data.num_workers, state,
                                        pin_memory=env.device.type == "cuda")
            state = None
            meter = LoaderMeter(loader)
            self.throughput.new_meter(meter)
            for batch in meter:
                values = self.schedule.at(self.step)
                outcome = self._optimizer_step(batch, epoch, values)
                self.step += 1
                in_epoch = batch.step + 1
                if self._should_log():
                    last_loss = self._log(outcome, values)
                if self._should_save():
                    self.save_checkpoint(order.state(in_epoch))
                if self.step >= self.last_step:
                    break
        return last_loss

    def _optimizer_step(self, batch: Batch, epoch: int, values: StepValues) -> StepOutcome:
        env = self.env
        self.optimizer.set_hyperparameters(values.lr, values.weight_decay)
        if self.loss_scaling is not None:
            self.loss_scaling.begin_step()
        micro = batch.crops.chunks(self.grad_accum)
        size = batch.crops.batch_size // self.grad_accum
        sums: dict[str, torch.Tensor] = {}
        finite = torch.ones((), dtype=torch.bool, device=env.device)
        for m, crops in enumerate(micro):
            seed = micro_batch_seed(self.cfg.train.seed, epoch, int(batch.positions[m * size]))
            self.generator.manual_seed(seed)
            torch.manual_seed(seed)  # drop path and any other use of the global RNG
            views = self.model.prepare(crops.to(env.device, non_blocking=True), self.generator)
            out = self.engine(views, self.model.teacher(views, values.distill))
            finite &= torch.isfinite(out.total)
            if self.loss_scaling is not None:
                self.loss_scaling.backward(out.total)
            else:
                self.engine.backward(out.total)
            for name, value in {"total": out.total.detach(), **out.terms}.items():
                sums[name] = sums.get(name, 0) + value.float() / len(micro)
            if m == len(micro) - 1:  # the accumulation boundary: agree over ranks before the step
                grads_ok, grad_norm = self._check_gradients()
                loss_ok = all_true(bool(finite.item()), env.device)
                applied = loss_ok and grads_ok  # gradients are reduced (or checked by ZeRO): the same on every rank
                self.optimizer.skip_next = not applied
            self.engine.step()
        applied = applied and self.engine.was_step_applied()  # ZeRO skips overflowed steps itself
        # A finite loss whose scaled gradients overflowed while the fp16 scale can still come down is the
        # scale calibrating itself: skipped and counted, but not a step towards train.max_nonfinite_steps.
        calibrating = (self.loss_scaling is not None and loss_ok and not applied
                       and self.loss_scaling.scale.can_back_off)
        if self.loss_scaling is not None:
            self.loss_scaling.scale.update(overflow=not applied)
        if grad_norm is None and applied:
            grad_norm = self.engine.get_global_grad_norm()  # from ZeRO, which holds the gradients
        self.model.end_step(values.distill.momentum, applied)
        self._count_skipped(applied, calibrating)
        return StepOutcome(sums, applied, None if grad_norm is None else float(grad_norm))

    def _check_gradients(self) -> tuple[bool, float | None]:
        """Without ZeRO, at the boundary: whether the reduced gradients are finite (unscaled if fp16), and their norm.

        Under ZeRO the engine's optimizer holds partitioned gradients and checks them itself in `step`.
        """
        if self.engine.zero_optimization():
            return True, None
        grads = [p.grad for p in self.engine.module.parameters() if p.grad is not None]
        if not grads:
            return True, None
        norm = float(torch.nn.utils.get_total_norm(grads))
        if not math.isfinite(norm):
            return False, None
        return True, norm if self.loss_scaling is None else self.loss_scaling.unscale(grads, norm)

    def _count_skipped(self, applied: bool, calibrating: bool) -> None:
        """Count a skipped step; stop after train.max_nonfinite_steps in a row that were not fp16 calibration."""
        if applied:
            self.nonfinite_streak = 0
            return
        self.nonfinite_total += 1
        if calibrating:
            if self.env.is_main:
                print(f"[pretrain] step {self.step}: fp16 gradients overflowed, step skipped, loss scale now "
                      f"{self.loss_scaling.scale.scale:g} ({self.nonfinite_total} skipped in all)", flush=True)
            return
        self.nonfinite_streak += 1
        if self.env.is_main:
            print(f"[pretrain] step {self.step}: non-finite loss or gradients, step skipped "
                  f"({self.nonfinite_streak} in a row, {self.nonfinite_total} in all)", flush=True)
        if self.nonfinite_streak >= self.cfg.train.max_nonfinite_steps:
            raise NonFiniteLossError(f"{self.nonfinite_streak} non-finite steps in a row (train.max_nonfinite_steps)"
                                     f" at step {self.step}: lower optim.lr or check the data")

    def _should_log(self) -> bool:
        return self.step % self.cfg.train.log_every == 0 or self.step == self.last_step

    def _should_save(self) -> bool:
        c = self.cfg.checkpoint
        due = self.step == self.last_step or (c.every_steps > 0 and self.step % c.every_steps == 0)
        if c.every_minutes > 0:
            due |= rank0_decides(time.monotonic() - self._last_save >= 60 * c.every_minutes, self.env.device)
        return due

    def _log(self, outcome: StepOutcome, values: StepValues) -> float:
        env = self.env
        losses = mean_over_ranks({f"loss/{k}": v for k, v in outcome.terms.items()}, env.device)
        metrics = {**losses, **values.as_metrics(), **self.throughput.metrics(),
                   "train/epoch": self.step / self.steps_per_epoch,
                   "train/nonfinite_steps": float(self.nonfinite_total)}
        if outcome.grad_norm is not None and math.isfinite(outcome.grad_norm):
            metrics["opt/grad_norm"] = outcome.grad_norm
        if self.loss_scaling is not None:
            metrics["opt/loss_scale"] = self.loss_scaling.scale.scale
        if env.is_main:
            if self.tracker is not None:
                self.tracker.log_metrics(metrics, self.step)
            print(f"[pretrain] step {self.step}/{self.last_step} loss {metrics['loss/total']:.4f} "
                  f"lr {values.lr:.3g} {metrics['throughput/samples_per_s']:.1f} shapes/s "
                  f"data-wait {metrics['data/wait_fraction']:.0%}", flush=True)
        return metrics["loss/total"]

