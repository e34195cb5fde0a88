"""One optimizer step of a self-distillation method through the DeepSpeed engine, and the bookkeeping of skipped steps.

Per micro-batch: reseed the model's randomness from the samples, prepare the views (patchify, masks),
run the teacher (outside the engine), then the student forward and backward in the engine. At the
accumulation boundary the ranks agree whether loss and gradients are finite, the engine steps the
client AdamW (or skips it), and the EMA teacher and the centres follow.

Non-finite losses and fp16 overflows skip the whole step (weights, Adam moments, teacher and centres
stay as they were); `SkippedSteps` counts them and stops the job after `train.max_nonfinite_steps` in a
row, once the last of them has been reported and logged like any other step. A finite loss whose fp16
gradients overflowed while the loss scale can still come down is the scale calibrating itself: counted,
but not a step towards that limit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from launch.training.distributed import all_true
from launch.training.errors import NonFiniteLossError
from launch.training.optim import SkippableAdamW, StepValues
from launch.training.precision import LossScaling
from model.target_stats import TargetStats, accumulate
from model.teacher_student import TeacherStudent
from pipeline.loader import Batch


@dataclass
class StepOutcome:
    terms: dict[str, torch.Tensor]  # loss terms averaged over the step's micro-batches
    applied: bool
    grad_norm: float | None  # pre-clipping global norm, where it is known
    calibrating: bool = False  # an fp16 overflow while the loss scale could still back off
    targets: dict[str, TargetStats] | None = None  # this rank's target statistics per head, when observed


def micro_batch_seed(seed: int, epoch: int, position: int) -> int:
    """The model-side RNG seed of a micro-batch, from the global position of its first sample."""
    return int(np.random.SeedSequence([seed, epoch, position, 0x5EED]).generate_state(1, np.uint64)[0] >> 1)


class TrainStep:
    """`step(batch, epoch, values, observe)`: one optimizer step over a rank's share of a global batch.

    With `observe`, the teacher's targets of every micro-batch are also summarised (`model.target_stats`)
    into the outcome; that reads them and changes nothing else, so it is asked for on logged steps only.
    """

    def __init__(self, model: TeacherStudent, engine, optimizer: SkippableAdamW, loss_scaling: LossScaling | None,
                 seed: int, device: torch.device) -> None:
        self.model, self.engine, self.optimizer, self.loss_scaling = model, engine, optimizer, loss_scaling
        self.seed, self.device = seed, device
        self.grad_accum = engine.gradient_accumulation_steps()
        self.generator = torch.Generator(device)

    def __call__(self, batch: Batch, epoch: int, values: StepValues, observe: bool = False) -> StepOutcome:
        self.optimizer.set_hyperparameters(values.lr, values.weight_decay)
        if self.loss_scaling is not None:
            self.loss_scaling.begin_step()
        micro = batch.crops.chunks(self.grad_accum)
        size = batch.crops.batch_size // self.grad_accum
        sums: dict[str, torch.Tensor] = {}
        targets: dict[str, TargetStats] | None = None
        finite = torch.ones((), dtype=torch.bool, device=self.device)
        for m, crops in enumerate(micro):
            seed = micro_batch_seed(self.seed, epoch, int(batch.positions[m * size]))
            self.generator.manual_seed(seed)
            torch.manual_seed(seed)  # drop path and any other use of the global RNG
            views = self.model.prepare(crops.to(self.device, non_blocking=True), self.generator)
            teacher = self.model.teacher(views, values.distill)
            if observe:
                targets = accumulate(targets, self.model.target_stats(views, teacher))
            out = self.engine(views, teacher)
            del teacher  # not held through the next micro-batch's teacher forward
            finite &= torch.isfinite(out.total)
            if self.loss_scaling is not None:
                self.loss_scaling.backward(out.total)
            else:
                self.engine.backward(out.total)
            for name, value in {"total": out.total.detach(), **out.terms}.items():
                sums[name] = sums.get(name, 0) + value.float() / len(micro)
            if m == len(micro) - 1:  # the accumulation boundary: agree over ranks before the step
                grads_ok, grad_norm = self._check_gradients()
                loss_ok = all_true(bool(finite.item()), self.device)
                applied = loss_ok and grads_ok  # gradients are reduced (or checked by ZeRO): the same on every rank
                self.optimizer.skip_next = not applied
            self.engine.step()
        applied = applied and self.engine.was_step_applied()  # ZeRO skips overflowed steps itself
        calibrating = (self.loss_scaling is not None and loss_ok and not applied
                       and self.loss_scaling.scale.can_back_off)
        if self.loss_scaling is not None:
            self.loss_scaling.scale.update(overflow=not applied)
        if grad_norm is None and applied:
            grad_norm = self.engine.get_global_grad_norm()  # from ZeRO, which holds the gradients
        self.model.end_step(values.distill.momentum, applied)
        return StepOutcome(sums, applied, None if grad_norm is None else float(grad_norm), calibrating, targets)

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


@dataclass
class SkippedSteps:
    """Skipped steps in all and in a row; `stop_if_exhausted` raises `NonFiniteLossError` at `max_in_a_row`."""

    max_in_a_row: int
    total: int = 0
    streak: int = 0

    def record(self, step: int, outcome: StepOutcome, loss_scale: float | None = None) -> str | None:
        """Count `outcome` of optimizer step `step`; returns a line to print for a skipped step."""
        if outcome.applied:
            self.streak = 0
            return None
        self.total += 1
        if outcome.calibrating:
            return (f"step {step}: fp16 gradients overflowed, step skipped, loss scale now {loss_scale:g} "
                    f"({self.total} skipped in all)")
        self.streak += 1
        return (f"step {step}: non-finite loss or gradients, step skipped ({self.streak} in a row, "
                f"{self.total} in all)")

    @property
    def exhausted(self) -> bool:
        return self.streak >= self.max_in_a_row

    def stop_if_exhausted(self, step: int) -> None:
        """Stop the job once `max_in_a_row` steps in a row were skipped, `step` (already recorded) the last."""
        if self.exhausted:
            raise NonFiniteLossError(f"{self.streak} non-finite steps in a row (train.max_nonfinite_steps) at step "
                                     f"{step}: lower optim.lr or check the data")
