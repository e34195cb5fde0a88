"""Peak selection by matmul precision and the MFU arithmetic of launch/training/throughput.py."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from launch.training import throughput
from launch.training.throughput import Throughput, peak_flops
from pipeline.loader import Batch
from pipeline.metrics import LoaderMeter, LoaderStats

GPU = torch.device("cuda", 0)


@pytest.fixture
def gpu_named(monkeypatch):
    def name(device_name: str) -> None:
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: device_name)
    return name


@pytest.mark.parametrize(
    ("precision", "tf32", "expected"),
    [("bf16", False, 989.5e12), ("fp16", True, 989.5e12), ("fp32", True, 494.5e12), ("fp32", False, 67e12)],
)
def test_h100_sxm_peak_follows_precision(gpu_named, precision, tf32, expected):
    gpu_named("NVIDIA H100 80GB HBM3")
    assert peak_flops(GPU, None, precision, tf32) == expected


@pytest.mark.parametrize(
    ("name", "bf16", "tf32"),
    [("NVIDIA H100 PCIe", 756.5e12, 378e12), ("NVIDIA GH200 480GB", 989.5e12, 494.5e12),
     ("NVIDIA H200", 989.5e12, 494.5e12), ("NVIDIA A100-SXM4-80GB", 312e12, 156e12),
     ("NVIDIA L40S", 362.05e12, 183e12)],
)
def test_peak_by_gpu_name(gpu_named, name, bf16, tf32):
    gpu_named(name)
    assert (peak_flops(GPU, None, "bf16", True), peak_flops(GPU, None, "fp32", True)) == (bf16, tf32)


def test_configured_peak_wins_and_unknown_devices_have_none(gpu_named):
    gpu_named("NVIDIA GeForce RTX 4090")
    assert peak_flops(GPU, None, "bf16", True) is None
    assert peak_flops(torch.device("cpu"), None, "bf16", True) is None
    assert peak_flops(torch.device("cpu"), 100.0, "fp32", False) == 100e12
    with pytest.raises(ValueError, match="precision"):
        peak_flops(GPU, None, "fp8", False)


def test_mfu_is_flops_per_sample_times_rank_rate_over_peak(monkeypatch):
    clock = iter([0.0, 2.0, 2.0, 3.0])
    monkeypatch.setattr(throughput.time, "perf_counter", lambda: next(clock))
    meter = Throughput(global_batch=64, world_size=4, peak=1e12, flops_per_sample=5e9)
    meter.new_meter(SimpleNamespace(stats=LoaderStats(batches=10)))
    metrics = meter.metrics()  # 10 steps of 64 shapes in 2 s: 320 shapes/s, 80 per rank
    assert metrics["throughput/samples_per_s_per_rank"] == 80.0
    assert metrics["throughput/mfu"] == pytest.approx(5e9 * 80 / 1e12)
    assert "throughput/mfu" not in Throughput(64, 4, None, 5e9).metrics()


def test_data_wait_fraction_of_each_log_window_is_within_0_and_1(monkeypatch):
    """One slow batch after fast steps: the window's wait is part of the window's time, never more."""
    now = [0.0]
    monkeypatch.setattr(throughput.time, "perf_counter", lambda: now[0])

    def batches():
        for step, wait in enumerate((1.0, 10.0, 1.0, 1.0)):
            now[0] += wait
            yield Batch(step, None, torch.arange(4), padding=0, skipped=0, load_seconds=wait)

    rate = Throughput(global_batch=4, world_size=1, peak=None, flops_per_sample=None)
    meter = LoaderMeter(batches(), clock=lambda: now[0])
    rate.new_meter(meter)
    fractions = []
    for _ in meter:
        now[0] += 0.1  # the step, then the log line
        fractions.append(rate.metrics()["data/wait_fraction"])
    assert fractions == pytest.approx([1.0, 10.0 / 10.1, 1.0 / 1.1, 1.0 / 1.1])
