"""Steady-state throughput of the trainer's optimizer step on synthetic point clouds.

Every step is `launch.training.step.TrainStep`, the step the pretraining loop runs: the model's
randomness reseeded from the samples, `AsymDSD.prepare` (patchify + masks), the EMA teacher, the
student forward and backward in the DeepSpeed engine with the forwards under autocast to --precision
(`AsymDSD.set_autocast`; the weights stay fp32), the finiteness check and gradient norm, the engine's
step of the client AdamW (clipping at the global norm), and the teacher EMA with the centre update.
In fp16 the loss is scaled by the trainer's dynamic loss scale; a step it skips (inf/NaN gradients)
leaves the teacher alone and is counted. With --compile the model's regions are compiled
(`AsymDSD.compile`) before the engine is built, as `train.compile` does.

The engine, the optimizer and the schedules are built as the trainer builds them, for one rank
without gradient accumulation: the model config, the DeepSpeed JSON of --deepspeed (default ZeRO-0)
and the default `optim` settings of a 100-epoch job of 100 steps per epoch.

Input: one fixed synthetic batch (`bench.synthetic`: random ellipsoid surfaces, every crop full),
built once on the device and reused every step with new sample positions, so the masks change from
step to step; no data loading is measured. Global crops have --global-points points, local crops
--local-points (defaults 1024 / 256, or 512 / 128 for the `tiny` config). Patchify runs in the model.

Measured:

* shapes/s = batch_size * steps / wall time of the timed steps (after --warmup untimed steps;
  CUDA is synchronised before each clock read), and the mean step time; the first step's and the
  whole warm-up's seconds on their own (with --compile they hold the compilation);
* MFU: the analytic FLOPs of one step (`model.flops.training_flops`: matmuls and attention of teacher
  forward, student forward and backward) per step time, over the device's dense peak for the
  precision (`launch.training.throughput.peak_flops`); none on CPU;
* peak memory: `torch.cuda.max_memory_allocated` over the timed steps on CUDA; on CPU the process'
  peak resident set size (`ru_maxrss`, whole lifetime, model build included);
* student / teacher parameter counts;
* a time split from 2 extra steps under `torch.profiler`: kernel (device) time on CUDA, CPU time on
  CPU, per `record_function` label of the model ("asymdsd/patchify", "asymdsd/teacher",
  "asymdsd/student_encoder", "asymdsd/predictor", "asymdsd/losses") and of this benchmark
  ("bench/backward" around the engine's backward, "bench/optimizer" around the engine's step and the
  teacher update). Labels may nest (the profiler's record_function scopes are not exclusive), so two
  figures are given: `excl` charges each op to its innermost label and the rows plus "other"
  (unlabelled work in the step: seeding, the gradient check) add up to the profiled step; `incl`
  charges it to every enclosing label (for "other" both are the same). On CUDA the autograd engine
  runs the backward on its own thread, so all work on threads other than the one running the steps
  is charged to "backward" (checkpoint recomputation included).

Run on a GPU from the project root:

    python -m bench.model_step --config configs/model/asymdsd_s.yaml --device cuda --batch-size 128
    python -m bench.model_step --config configs/model/asymdsd_b.yaml --device cuda --precision fp16 --compile

CPU smoke run:

    python -m bench.model_step --config configs/model/tiny.yaml --device cpu

The last printed line is `RESULT {json}`; --json PATH also writes that object to a file.
"""

from __future__ import annotations

import argparse
import math
import resource
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch.autograd import DeviceType
from torch.autograd.profiler_util import FunctionEvent
from torch.profiler import ProfilerActivity, profile, record_function

from bench.common import add_json_option, benchmark_main
from bench.synthetic import synthetic_batch
from configuration import read_mapping
from launch.training.config import PretrainConfig, TrainConfig, deepspeed_config
from launch.training.distributed import init_distributed
from launch.training.optim import Schedule, SkippableAdamW
from launch.training.precision import DynamicLossScale, LossScaling, autocast_dtype
from launch.training.step import TrainStep
from launch.training.throughput import peak_flops
from model.asymdsd import AsymDSD
from model.batch import MultiCropBatch
from model.config import ModelConfig, load_model_config
from model.flops import training_flops
from pipeline.config import CropConfig, DataConfig, DatasetConfig
from pipeline.loader import Batch

STEPS_PER_EPOCH = 100
EPOCHS = 100
PROFILED_STEPS = 2
STEP_LABEL = "bench/step"
SPLIT_LABELS = {
    "asymdsd/patchify": "patchify",
    "asymdsd/teacher": "teacher",
    "asymdsd/student_encoder": "student_encoder",
    "asymdsd/predictor": "predictor",
    "asymdsd/losses": "losses",
    "bench/backward": "backward",
    "bench/optimizer": "optimizer",
}
OTHER = "other"


class Labelled:
    """`target` with the named methods run under profiler labels, everything else passed through: how the
    step's time is split into backward and optimizer without a second copy of the step."""

    def __init__(self, target, **labels: str) -> None:
        self._target, self._labels = target, labels

    def __getattr__(self, name: str):
        attr = getattr(self._target, name)
        label = self._labels.get(name)
        if label is None:
            return attr

        def labelled(*args, **kwargs):
            with record_function(label):
                return attr(*args, **kwargs)

        return labelled

    def __call__(self, *args, **kwargs):
        return self._target(*args, **kwargs)


@dataclass
class Bench:
    model: AsymDSD
    train_step: TrainStep
    schedule: Schedule
    crops: MultiCropBatch
    device: torch.device
    step: int = 0
    skipped_steps: int = 0  # steps not applied (fp16: the loss scale backing off after inf/NaN gradients)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="model YAML, e.g. configs/model/asymdsd_s.yaml")
    default_device = "cuda" if torch.cuda.is_available() else "cpu"
    parser.add_argument("--device", choices=("cpu", "cuda"), default=default_device)
    parser.add_argument("--batch-size", type=int, help="shapes per step (default 128 on cuda, 8 on cpu)")
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16"),
                        help="autocast dtype, fp32 weights (default bf16 on cuda, fp32 on cpu; fp16 needs cuda)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model's regions first")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps before timing (at least 1)")
    parser.add_argument("--steps", type=int, help="timed steps (default 10 on cuda, 5 on cpu)")
    parser.add_argument("--global-points", type=int, help="points per global crop (default 1024, tiny 512)")
    parser.add_argument("--local-points", type=int, help="points per local crop (default 256, tiny 128)")
    parser.add_argument("--tf32", action=argparse.BooleanOptionalAction, default=True, help="TF32 on cuda")
    parser.add_argument("--deepspeed", default="configs/deepspeed/zero0.json",
                        help="DeepSpeed JSON of the engine (ZeRO stage and buckets)")
    add_json_option(parser)
    args = parser.parse_args(argv)
    on_cuda = args.device == "cuda"
    if args.batch_size is None:
        args.batch_size = 128 if on_cuda else 8
    if args.precision is None:
        args.precision = "bf16" if on_cuda else "fp32"
    if args.warmup < 1:
        parser.error("--warmup must be at least 1 (the first step is timed on its own)")
    if args.precision == "fp16" and not on_cuda:
        parser.error("--precision fp16 needs --device cuda (fp16 autocast on CPU has no fast matmuls)")
    if args.steps is None:
        args.steps = 10 if on_cuda else 5
    return args


def default_points(cfg: ModelConfig) -> tuple[int, int]:
    return (512, 128) if cfg.name == "tiny" else (1024, 256)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_step(bench: Bench) -> None:
    """One `TrainStep` over the fixed crops, as the step after the ones before it (new sample positions)."""
    size = bench.crops.batch_size
    positions = torch.arange(bench.step * size, (bench.step + 1) * size)
    batch = Batch(bench.step, bench.crops, positions, padding=0, skipped=0, load_seconds=0.0)
    outcome = bench.train_step(batch, bench.step // STEPS_PER_EPOCH, bench.schedule.at(bench.step))
    bench.skipped_steps += not outcome.applied
    bench.step += 1


def timed_steps(bench: Bench, steps: int) -> float:
    """Wall seconds for `steps` consecutive training steps."""
    synchronize(bench.device)
    start = time.perf_counter()
    for _ in range(steps):
        train_step(bench)
    synchronize(bench.device)
    return time.perf_counter() - start


def profiled_events(bench: Bench) -> list[FunctionEvent]:
    activities = [ProfilerActivity.CPU]
    if bench.device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    synchronize(bench.device)
    with profile(activities=activities) as prof:
        for _ in range(PROFILED_STEPS):
            with record_function(STEP_LABEL):
                train_step(bench)
                synchronize(bench.device)
    return list(prof.events())


LabelledEvent = tuple[FunctionEvent, tuple[str, ...]]


def walk(events: list[FunctionEvent], labels: tuple[str, ...]) -> Iterator[LabelledEvent]:
    """Every event below `events` (included), with the tracked labels enclosing it, innermost last."""
    for evt in events:
        label = SPLIT_LABELS.get(evt.name) or (OTHER if evt.name == STEP_LABEL else None)
        inner = labels + (label,) if label else labels
        yield evt, inner
        yield from walk(evt.cpu_children, inner)


def time_split(events: list[FunctionEvent], on_device: bool) -> dict[str, dict[str, float] | None]:
    """Per-step ms of every split label, exclusive and inclusive, plus the profiled step totals.

    On CUDA each CPU op is charged its own kernels' time (`self_device_time_total`), on CPU its own
    CPU time (`self_cpu_time_total`). Returns {label: {"ms", "pct", "incl_ms", "incl_pct"} or None
    when the label never ran, "step": {"ms": profiled time, "wall_ms": wall time of the step range}}.
    """
    cpu_events = [e for e in events if e.device_type == DeviceType.CPU and not e.is_async]
    steps = [e for e in cpu_events if e.name == STEP_LABEL]
    main_thread = steps[0].thread
    roots = [e for e in cpu_events if e.cpu_parent is None]
    main_roots = [e for e in roots if e.thread == main_thread]
    walked = list(walk(main_roots, ()))
    if on_device:  # autograd engine threads: the backward
        walked += list(walk([e for e in roots if e.thread != main_thread], ("backward",)))
    seen = {labels[-1] for _, labels in walked if labels}
    excl = dict.fromkeys([*SPLIT_LABELS.values(), OTHER], 0.0)
    incl = dict(excl)
    for evt, labels in walked:
        if not labels:
            continue
        us = evt.self_device_time_total if on_device else evt.self_cpu_time_total
        excl[labels[-1]] += us
        for label in {label for label in labels if label != OTHER} | {labels[-1]}:
            incl[label] += us
    total = sum(excl.values())
    split: dict[str, dict[str, float] | None] = {}
    for label in excl:
        split[label] = None if label not in seen or total <= 0 else {
            "ms": excl[label] / 1e3 / PROFILED_STEPS,
            "pct": 100.0 * excl[label] / total,
            "incl_ms": incl[label] / 1e3 / PROFILED_STEPS,
            "incl_pct": 100.0 * incl[label] / total,
        }
    split["step"] = {
        "ms": total / 1e3 / PROFILED_STEPS,
        "wall_ms": sum(e.cpu_time_total for e in steps) / 1e3 / PROFILED_STEPS,
    }
    return split


def peak_memory_mib(device: torch.device) -> tuple[float, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda max_memory_allocated (timed steps)"
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss_kib / 2**10, "cpu peak RSS (ru_maxrss, process lifetime)"


def count_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def job_config(args: argparse.Namespace, cfg: ModelConfig, global_points: int, local_points: int) -> PretrainConfig:
    """The pretraining job the step belongs to: this model, one global batch of the synthetic crops on one
    rank, the default optimiser settings and the DeepSpeed JSON of --deepspeed."""
    local = None
    if cfg.num_local_crops:
        local = CropConfig(count=cfg.num_local_crops, points=local_points, scale=(0.05, 0.4))
    data = DataConfig(datasets=[DatasetConfig(url="synthetic (in memory)")], loader_patchify=False,
                      global_crops=CropConfig(count=cfg.num_global_crops, points=global_points, scale=(0.4, 1.0)),
                      local_crops=local)
    train = TrainConfig(epochs=EPOCHS, global_batch=args.batch_size, device=args.device, precision=args.precision,
                        compile=args.compile, tf32=args.tf32)
    return PretrainConfig(name="model_step", model=cfg, data=data, train=train,
                          deepspeed=read_mapping(args.deepspeed))


def build(args: argparse.Namespace, cfg: ModelConfig) -> tuple[Bench, int, int]:
    """Model, client optimizer, DeepSpeed engine and `TrainStep` as the trainer builds them."""
    global_default, local_default = default_points(cfg)
    global_points = args.global_points or global_default
    local_points = args.local_points or local_default
    job = job_config(args, cfg, global_points, local_points)
    device = init_distributed(args.device).device
    import deepspeed  # after init_distributed has chosen its accelerator

    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = args.tf32
        torch.backends.cudnn.allow_tf32 = args.tf32
    torch.manual_seed(job.train.seed)
    model = AsymDSD(cfg)
    model.teacher.to(device)
    model.set_autocast(autocast_dtype(args.precision))
    if args.compile:
        model.compile()
    o = job.optim
    optimizer = SkippableAdamW(model.student.parameters(), lr=o.lr_start, betas=tuple(o.betas), eps=o.eps,
                               weight_decay=o.weight_decay)
    engine, *_ = deepspeed.initialize(model=model.student, optimizer=optimizer, config=deepspeed_config(job, 1))
    engine = Labelled(engine, backward="bench/backward", step="bench/optimizer")
    loss_scaling = LossScaling(engine, DynamicLossScale()) if args.precision == "fp16" else None
    step = TrainStep(Labelled(model, end_step="bench/optimizer"), engine, optimizer, loss_scaling, job.train.seed,
                     device)
    crops = synthetic_batch(cfg, args.batch_size, global_points, local_points).to(device)
    return Bench(model, step, Schedule(job, STEPS_PER_EPOCH), crops, device), global_points, local_points


def run(args: argparse.Namespace) -> dict:
    cfg = load_model_config(args.config)
    bench, global_points, local_points = build(args, cfg)
    first_step_s = timed_steps(bench, 1)
    warmup_s = first_step_s + timed_steps(bench, args.warmup - 1)
    if bench.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(bench.device)
    skipped_warmup = bench.skipped_steps
    seconds = timed_steps(bench, args.steps)
    skipped_timed = bench.skipped_steps - skipped_warmup
    memory, memory_kind = peak_memory_mib(bench.device)
    split = time_split(profiled_events(bench), on_device=bench.device.type == "cuda")
    flops = training_flops(cfg, args.batch_size).total
    peak = peak_flops(bench.device, None, args.precision, args.tf32)
    return {
        "config": str(args.config),
        "name": cfg.name,
        "mode": cfg.mode,
        "device": args.device,
        "device_name": torch.cuda.get_device_name(bench.device) if bench.device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "precision": args.precision,
        "compile": args.compile,
        "deepspeed": args.deepspeed,
        "tf32": bool(args.tf32 and bench.device.type == "cuda"),
        "batch_size": args.batch_size,
        "global_points": global_points,
        "local_points": local_points,
        "warmup": args.warmup,
        "steps": args.steps,
        "first_step_s": first_step_s,
        "warmup_s": warmup_s,
        "shapes_per_s": args.batch_size * args.steps / seconds,
        "step_ms": 1e3 * seconds / args.steps,
        "skipped_steps": skipped_timed,
        "skipped_warmup_steps": skipped_warmup,
        "flops_per_step": flops,
        "peak_tflops": None if peak is None else peak / 1e12,
        "mfu": None if peak is None else flops * args.steps / seconds / peak,
        "peak_memory_mib": memory,
        "peak_memory_kind": memory_kind,
        "params_student": count_params(bench.model.student),
        "params_teacher": count_params(bench.model.teacher),
        "split_basis": "cuda kernel time" if bench.device.type == "cuda" else "cpu time",
        "split": split,
    }


def fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None or not math.isfinite(value) else format(value, spec)


def report(result: dict) -> None:
    print(
        f"{result['name']} ({result['mode']}) on {result['device_name']}, torch {result['torch']},"
        f" {result['precision']}{', tf32' if result['tf32'] else ''}{', compiled' if result['compile'] else ''},"
        f" batch {result['batch_size']},"
        f" points {result['global_points']}/{result['local_points']},"
        f" {result['warmup']} warmup + {result['steps']} timed steps"
    )
    print(f"  params        student {result['params_student']:,}  teacher {result['params_teacher']:,}")
    print(f"  warm-up       first step {result['first_step_s']:.1f} s, {result['warmup']} warm-up steps"
          f" {result['warmup_s']:.1f} s")
    print(f"  throughput    {result['shapes_per_s']:.1f} shapes/s  ({result['step_ms']:.1f} ms/step),"
          f" MFU {fmt(result['mfu'], '.1%')} of {fmt(result['peak_tflops'], '.0f')} TFLOP/s,"
          f" {result['flops_per_step'] / 1e9:.1f} GFLOP/step")
    if result["precision"] == "fp16":
        print(f"  fp16 skipped  {result['skipped_steps']} of the timed steps,"
              f" {result['skipped_warmup_steps']} of the warm-up steps (loss scale overflow)")
    print(f"  peak memory   {result['peak_memory_mib']:.0f} MiB  [{result['peak_memory_kind']}]")
    step = result["split"]["step"]
    print(
        f"  split ({result['split_basis']}, {PROFILED_STEPS} profiled steps): {step['ms']:.1f} ms/step"
        f" (wall {step['wall_ms']:.1f} ms/step)"
    )
    print(f"    {'label':<16}{'excl ms':>10}{'excl %':>8}{'incl ms':>10}{'incl %':>8}")
    for label, row in result["split"].items():
        if label == "step":
            continue
        row = row or {}
        print(
            f"    {label:<16}{fmt(row.get('ms'), '.2f'):>10}{fmt(row.get('pct'), '.1f'):>8}"
            f"{fmt(row.get('incl_ms'), '.2f'):>10}{fmt(row.get('incl_pct'), '.1f'):>8}"
        )


main = benchmark_main(parse_args, run, report)


if __name__ == "__main__":
    sys.exit(main())
