"""Mixed precision as the reference trains it: fp32 weights, an autocast forward, fp16 loss scaling.

The DeepSpeed engine holds the student in fp32 (no `bf16`/`fp16` section: those cast the module's
weights, and the EMA teacher would then average a rounded copy). Teacher and student run their
forwards under `torch.autocast` with the chosen dtype (`AsymDSD.set_autocast`), as Lightning's
`16-mixed` does in the official code; the backward follows the forward's dtypes. Neither DeepSpeed
route does this as a whole (measured with DeepSpeed 0.19): an autocast opened around the engine is
switched off inside its forward unless the `torch_autocast` section is on, and that section reduces
Linear gradients in the low dtype by default and, with ZeRO and fp16, clips the still-scaled
gradients and lets each rank find overflows in its own partition only. So the model applies autocast
inside its own forward and this module scales the loss.

fp16 needs a dynamic loss scale (`DynamicLossScale`, torch's GradScaler rule). `LossScaling` hands
it to the engine: under ZeRO the engine's optimizer owns the gradients, so it receives the scale
(`override_loss_scale`), scales the loss in `engine.backward`, unscales before clipping and skips an
overflowed step on every rank. Without ZeRO every rank holds whole, reduced gradients after the last
backward, so the loss is scaled and the gradients are checked and unscaled here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import torch

Precision = Literal["fp32", "bf16", "fp16"]
AUTOCAST_DTYPE = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(setting: str, device: torch.device) -> Precision:
    """`auto` is bf16 on CUDA and fp32 elsewhere; fp16 needs CUDA (autocast on CPU has no fp16 matmuls to gain)."""
    if setting == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    if setting == "fp16" and device.type != "cuda":
        raise ValueError(f"train.precision=fp16 needs a CUDA device, this job runs on {device.type}: "
                         f"use train.precision=fp32 or bf16 (allowed: auto, fp32, bf16, fp16)")
    return setting  # type: ignore[return-value]


def autocast_dtype(precision: Precision) -> torch.dtype | None:
    """The forward's autocast dtype; None for fp32 (no autocast)."""
    return AUTOCAST_DTYPE.get(precision)


@dataclass
class DynamicLossScale:
    """Halve the scale after an overflowed step; double it after `growth_interval` clean steps in a row.

    The first steps of an fp16 run typically overflow a few times while the scale comes down from
    2**16 (torch's GradScaler start); `can_back_off` tells those apart from overflows at the floor.
    """

    scale: float = 2.0**16
    growth_factor: float = 2.0
    backoff_factor: float = 0.5
    growth_interval: int = 2000
    min_scale: float = 1.0
    clean_steps: int = 0

    @property
    def can_back_off(self) -> bool:
        return self.scale > self.min_scale

    def update(self, overflow: bool) -> None:
        if overflow:
            self.scale = max(self.scale * self.backoff_factor, self.min_scale)
            self.clean_steps = 0
            return
        self.clean_steps += 1
        if self.clean_steps == self.growth_interval:
            self.scale *= self.growth_factor
            self.clean_steps = 0

    def state_dict(self) -> dict[str, float | int]:
        return asdict(self)

    @classmethod
    def from_state_dict(cls, state: dict[str, float | int]) -> DynamicLossScale:
        return cls(**state)


class LossScaling:
    """Applies a `DynamicLossScale` to one engine's backward and step (fp16 only; see the module docstring)."""

    def __init__(self, engine, scale: DynamicLossScale) -> None:
        self.engine = engine
        self.scale = scale
        self.engine_scales = bool(engine.zero_optimization())

    def begin_step(self) -> None:
        if self.engine_scales:
            self.engine.optimizer.override_loss_scale(self.scale.scale)

    def backward(self, loss: torch.Tensor) -> None:
        self.engine.backward(loss if self.engine_scales else loss * self.scale.scale)

    def unscale(self, grads: list[torch.Tensor], norm: float) -> float:
        """Without ZeRO: divide the finite, reduced gradients (of global norm `norm`) by the scale; their new norm."""
        torch._foreach_mul_(grads, 1.0 / self.scale.scale)
        return norm / self.scale.scale
