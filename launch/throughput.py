"""Training throughput for the logs: shapes/s (global and per rank), data-wait fraction, MFU.

Everything is measured over the window since the previous log line, so a slow start (worker
spin-up, JIT, the first checkpoint) does not linger in later numbers. MFU is the FLOPs the step
really executes (counted once with `torch.utils.flop_counter` on the first micro-batch: teacher
forward, student forward and backward) times shapes/s, over the device's dense bf16 peak.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from pipeline.metrics import LoaderMeter, LoaderStats

# Dense bf16 tensor-core peaks (vendor datasheets), matched in order against the CUDA device name.
PEAK_BF16_FLOPS = (
    ("H100 PCIe", 756e12),
    ("H100", 989e12),
    ("H200", 989e12),
    ("GH200", 989e12),
    ("A100", 312e12),
    ("L40S", 362e12),
)


def peak_flops(device: torch.device, configured_tflops: float | None) -> float | None:
    """Peak FLOP/s of one device: configured, else from the GPU's name; None (no MFU) on CPU or unknown GPUs."""
    if configured_tflops is not None:
        return configured_tflops * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16_FLOPS if key in name), None)


class Throughput:
    def __init__(self, global_batch: int, world_size: int, peak: float | None) -> None:
        self.global_batch, self.world_size, self.peak = global_batch, world_size, peak
        self.flops_per_sample: float | None = None
        self._meter: LoaderMeter | None = None
        self._seen = LoaderStats()
        self._since = time.perf_counter()

    @contextlib.contextmanager
    def count_flops(self, enabled: bool, samples: int):
        """Count the FLOPs of the enclosed micro-batch once (when MFU is wanted)."""
        if not enabled or self.peak is None:
            yield
            return
        counter = FlopCounterMode(display=False)
        with counter:
            yield
        self.flops_per_sample = counter.get_total_flops() / samples

    def new_meter(self, meter: LoaderMeter) -> None:
        self._meter, self._seen = meter, LoaderStats()

    def metrics(self) -> dict[str, float]:
        """Throughput since the previous call; call it once per log step on every rank."""
        now = time.perf_counter()
        stats = self._meter.stats if self._meter is not None else LoaderStats()
        window = LoaderStats(**{f.name: getattr(stats, f.name) - getattr(self._seen, f.name)
                                for f in dataclasses.fields(LoaderStats)})
        self._seen = dataclasses.replace(stats)
        steps = window.batches
        seconds = max(now - self._since, 1e-9)
        self._since = now
        per_s = steps * self.global_batch / seconds
        out = {"throughput/samples_per_s": per_s, "throughput/samples_per_s_per_rank": per_s / self.world_size,
               **window.as_metrics()}
        if self.flops_per_sample is not None and self.peak:
            out["throughput/mfu"] = self.flops_per_sample * per_s / self.world_size / self.peak
        return out
