"""Samples per second per CPU core of the loader's per-sample work, against the reference's algorithm.

Per sample, timed from the stored `.npy` bytes in memory (16,384 float32 points) to padded crops:

* ours: the loader's per-sample generator (`pipeline.loader.sample_rng`), the loader's decode of the
  member's bytes (`pipeline.shards.decode_npy`: a view of the bytes, no pickles), `pipeline.crops.multi_crop`
  (2 x 1024 global + 4 x 256 local crops, Z rotation and anisotropic scale), then (b)
  `pipeline.patchify.patch_indices` (64 x 32 global, 16 x 32 local);
* baseline, the reference's per-sample CPU algorithm: the same generator and decode, then per crop
  its own rotation and box draws, the box distance over the (N, 3) cloud, a full `np.argsort` of it,
  a uniform subsample of the n nearest, Z rotation and scale, and padding; then (b') per crop
  `fpsample.bucket_fps_kdline_sampling(points, P, h=7, start_idx=...)` and
  `scipy.spatial.KDTree(points).query(centers, 32)` (skipped, with a message, without fpsample).

Inputs are generated up front and not timed: points on the surfaces of random ellipsoids, boxes and tori,
randomly rotated and scaled, stored with `np.save`. Single-core numbers come from this one process with
OMP/MKL/OpenBLAS threads set to 1 before numpy is imported and `torch.set_num_threads(1)`; each path is
warmed up on one sample, and each timing is the best of --rounds rounds (3) with the paths alternating
(the machine may be shared). Stage columns are mean milliseconds per sample of that run. The 200 clouds
(39 MB) do not fit in cache, so each sample starts cold, as a freshly read tar member does.

Model-side alternative: `model.patchify.patchify` (normalise, FPS, kNN, gather) in torch on CPU, one
thread, for the crops of a batch of 32 samples at once (64 global and 128 local crops); the time per batch
divided by 32 is the amortised per-sample cost, to compare with the loader-side patchify stage.

With --shards DIR (a dataset written by `sharding`), the whole loader is timed too: `make_loader` with
the default `DataConfig` (the crops above and loader-side patchify), in this process (no workers), for
--batches batches of 32 after one warm-up batch; samples per second of the batches' build time, which
adds the tar reads, the sample order, the batch stacking and the tensors to the per-sample work.

Run from the project root (about 20 seconds on a 2-core machine):

    python -m bench.loader_throughput --samples 200
    python -m bench.loader_throughput --samples 200 --shards data/shards/synthetic  # after the sharding demo

The last printed line is `RESULT {json}`; --json PATH also writes that object to a file.
"""

from __future__ import annotations

from bench.common import one_core_threads

one_core_threads()  # before numpy is imported: measure one core

import argparse  # noqa: E402
import functools  # noqa: E402
import io  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numba  # noqa: E402
import numpy as np  # noqa: E402
import scipy  # noqa: E402
import torch  # noqa: E402
from scipy.spatial import KDTree  # noqa: E402

from bench.common import add_json_option, benchmark_main, best_of_rounds  # noqa: E402
from model.config import PatchifyConfig  # noqa: E402
from model.patchify import patchify  # noqa: E402
from pipeline.config import AugmentConfig, CropConfig, DataConfig, DatasetConfig, MultiCropConfig  # noqa: E402
from pipeline.crops import Crops, multi_crop, random_rotations  # noqa: E402
from pipeline.loader import sample_rng  # noqa: E402
from pipeline.patchify import patch_indices  # noqa: E402
from pipeline.shards import decode_npy  # noqa: E402

try:
    import fpsample  # noqa: E402
except ImportError:
    fpsample = None

SPEC = MultiCropConfig()
PATCHES = {"global": (64, 32), "local": (16, 32)}  # (P, K) per crop kind
NUM_POINTS = 16384
ROUNDS = 3  # default number of alternating rounds; every timing is the best one, against noise from others
MODEL_BATCH = 32  # samples whose crops the model-side patchify processes at once
SEED = 0
STAGES = ("decode", "crops", "patchify")  # decode includes deriving the sample's generator


def surface_points(kind: int, rng: np.random.Generator) -> np.ndarray:
    """NUM_POINTS points on an ellipsoid (kind 0), box (1) or torus (2) surface, rotated, scaled, shifted."""
    if kind == 0:
        unit = rng.standard_normal((NUM_POINTS, 3))
        points = unit / np.linalg.norm(unit, axis=1, keepdims=True) * rng.uniform(0.3, 1.5, 3)
    elif kind == 1:
        half = rng.uniform(0.2, 1.2, 3)
        points = rng.uniform(-1, 1, (NUM_POINTS, 3)) * half
        areas = np.array([half[1] * half[2], half[0] * half[2], half[0] * half[1]])
        axis = rng.choice(3, NUM_POINTS, p=areas / areas.sum())
        points[np.arange(NUM_POINTS), axis] = half[axis] * rng.choice([-1.0, 1.0], NUM_POINTS)
    else:
        major, minor = rng.uniform(0.6, 1.0), rng.uniform(0.1, 0.4)
        u, v = rng.uniform(0, 2 * np.pi, (2, NUM_POINTS))
        ring = major + minor * np.cos(v)
        points = np.stack([ring * np.cos(u), ring * np.sin(u), minor * np.sin(v)], axis=1)
    points = points @ random_rotations(1, rng)[0].T * rng.uniform(0.5, 2.0) + rng.normal(0, 0.5, 3)
    return points.astype(np.float32)


def make_samples(count: int) -> list[bytearray]:
    """`.npy` bytes of `count` clouds, each in its own buffer as the loader reads a tar member."""
    rng = np.random.default_rng(12345)
    out = []
    for i in range(count):
        buf = io.BytesIO()
        np.save(buf, surface_points(i % 3, rng), allow_pickle=False)
        out.append(bytearray(buf.getvalue()))
    return out


def decode(index: int, data: bytearray) -> tuple[np.random.Generator, np.ndarray]:
    return sample_rng(SEED, 0, index), decode_npy(data)


def ours_crops(cloud: np.ndarray, rng: np.random.Generator) -> list[Crops]:
    return [c for c in multi_crop(cloud, SPEC, rng) if c is not None]


def ours_patchify(crops: list[Crops], rng: np.random.Generator) -> list:
    return [patch_indices(c, *PATCHES[kind], rng) for c, kind in zip(crops, PATCHES)]


def reference_crop(
    cloud: np.ndarray, kind: CropConfig, augment: AugmentConfig, rng: np.random.Generator
) -> np.ndarray:
    """One crop as the reference computes it: its own draws, a full argsort of the box distance."""
    n_cloud = len(cloud)
    rotation = random_rotations(1, rng)[0]
    n = min(max(int(rng.uniform(*kind.scale) * n_cloud), kind.points), n_cloud)
    root = np.sqrt(rng.uniform(*kind.aspect))
    weights = rng.permutation([1.0, 1.0 / root, root])
    center = cloud[rng.integers(n_cloud)]
    local = (cloud - center) @ (rotation.T * weights).astype(np.float32)
    np.abs(local, out=local)
    distance = np.maximum(np.maximum(local[:, 0], local[:, 1]), local[:, 2])
    idx = np.argsort(distance)[:n]
    if n > kind.points:
        idx = rng.choice(idx, kind.points, replace=False)
    angle = rng.uniform(0, 2 * np.pi)
    cos, sin = np.cos(angle), np.sin(angle)
    rot_z = np.array([[cos, -sin, 0], [sin, cos, 0], [0, 0, 1]], np.float32)
    return (cloud[idx] @ rot_z.T) * rng.uniform(*augment.scale, 3).astype(np.float32)


def baseline_crops(cloud: np.ndarray, rng: np.random.Generator) -> list[tuple[list[np.ndarray], Crops]]:
    """Per kind: the unpadded crops (what the reference patchifies) and the padded batch."""
    out = []
    for kind in (SPEC.global_crops, SPEC.local_crops):
        crops = [reference_crop(cloud, kind, SPEC.augment, rng) for _ in range(kind.count)]
        padded = np.zeros((kind.count, kind.points, 3), np.float32)
        for row, crop in zip(padded, crops):
            row[: len(crop)] = crop
        out.append((crops, Crops(padded, np.array([len(c) for c in crops], dtype=np.int64))))
    return out


def baseline_patchify(crops: list[tuple[list[np.ndarray], Crops]], rng: np.random.Generator) -> list:
    out = []
    for (points, _), kind in zip(crops, PATCHES):
        num_patches, patch_size = PATCHES[kind]
        for p in points:
            centers = fpsample.bucket_fps_kdline_sampling(
                p, num_patches, h=7, start_idx=int(rng.integers(len(p)))
            )
            out.append((centers, KDTree(p).query(p[centers], patch_size)[1]))
    return out


Path_ = tuple[Callable, Callable | None]  # (crops, patchify or None)
PATHS: dict[str, Path_] = {
    "ours": (ours_crops, None),
    "baseline": (baseline_crops, None),
    "ours_patchify": (ours_crops, ours_patchify),
    "baseline_patchify": (baseline_crops, baseline_patchify),
}


def run_path(path: Path_, samples: list[bytearray]) -> tuple[float, dict[str, float]]:
    """Seconds for all samples and seconds per stage."""
    crop, patch = path
    stages = dict.fromkeys(STAGES, 0.0)
    start = time.perf_counter()
    for i, data in enumerate(samples):
        t0 = time.perf_counter()
        rng, cloud = decode(i, data)
        t1 = time.perf_counter()
        crops = crop(cloud, rng)
        t2 = time.perf_counter()
        if patch is not None:
            patch(crops, rng)
        t3 = time.perf_counter()
        stages["decode"] += t1 - t0
        stages["crops"] += t2 - t1
        stages["patchify"] += t3 - t2
    return time.perf_counter() - start, stages


def warm_run(path: Path_, samples: list[bytearray]) -> tuple[float, dict[str, float]]:
    """`run_path` over all samples after one untimed sample (compiled kernels, this path's caches)."""
    run_path(path, samples[:1])
    return run_path(path, samples)


def measure(samples: list[bytearray], names: list[str], rounds: int) -> dict[str, dict]:
    best = best_of_rounds(rounds, {name: functools.partial(warm_run, PATHS[name], samples) for name in names})
    result = {}
    for name, (seconds, stages) in best.items():
        result[name] = {
            "seconds": round(seconds, 4),
            "samples_per_s": round(len(samples) / seconds, 1),
            "ms_per_sample": round(1e3 * seconds / len(samples), 3),
            "stage_ms": {s: round(1e3 * v / len(samples), 3) for s, v in stages.items()},
        }
    return result


def model_side(samples: list[bytearray], rounds: int) -> dict:
    """Torch patchify on CPU of MODEL_BATCH samples' crops at once; best of `rounds`, amortised per sample."""
    batch = []
    for i, data in enumerate(samples[:MODEL_BATCH]):
        rng, cloud = decode(i, data)
        batch.append(ours_crops(cloud, rng))
    tensors = []
    for k, kind in enumerate(PATCHES):
        points = torch.from_numpy(np.concatenate([crops[k].points for crops in batch]))
        num = torch.from_numpy(np.concatenate([crops[k].num_points for crops in batch]))
        tensors.append((points, num, *PATCHES[kind]))
    generator = torch.Generator().manual_seed(SEED)
    stage: dict[str, float] = {}
    with torch.inference_mode():
        for points, num, p, k in tensors:  # warm-up
            patchify(points[:2], num[:2], p, k, generator=generator)
        for _ in range(rounds):
            for (points, num, p, k), kind in zip(tensors, PATCHES):
                start = time.perf_counter()
                patchify(points, num, p, k, generator=generator)
                stage[kind] = min(stage.get(kind, float("inf")), time.perf_counter() - start)
    total = sum(stage.values())
    return {
        "batch_samples": len(batch),
        "ms_per_batch": round(1e3 * total, 2),
        "ms_per_sample": round(1e3 * total / len(batch), 3),
        "ms_per_sample_by_kind": {kind: round(1e3 * v / len(batch), 3) for kind, v in stage.items()},
    }


def row(name: str, m: dict, baseline: dict | None) -> str:
    stages = "/".join(f"{m['stage_ms'][s]:.3f}" for s in STAGES)
    ratio = f"{m['samples_per_s'] / baseline['samples_per_s']:>7.2f}" if baseline else f"{'':>7}"
    return f"{name:<18} {m['samples_per_s']:>10.1f} {m['ms_per_sample']:>9.3f} {ratio}  {stages:>23}"


def run(args: argparse.Namespace) -> dict:
    samples = make_samples(args.samples)
    names = ["ours", "baseline", "ours_patchify"] + (["baseline_patchify"] if fpsample else [])
    if fpsample is None:
        print(
            "fpsample is not installed: skipping the baseline with reference patchify (pip install fpsample)"
        )
    torch.set_num_threads(1)
    paths = measure(samples, names, args.rounds)
    result: dict = {
        "samples": args.samples,
        "rounds": args.rounds,
        "num_points": NUM_POINTS,
        "threads": os.environ["OMP_NUM_THREADS"],
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "torch": torch.__version__,
        "numba": numba.__version__,
        "fpsample": getattr(fpsample, "__version__", None) if fpsample else None,
        "paths": paths,
    }
    print(f"{'path':<18} {'samples/s':>10} {'ms/samp':>9} {'ratio':>7}  {'ms decode/crops/patchify':>23}")
    for name in names:
        baseline = paths.get(name.replace("ours", "baseline")) if name.startswith("ours") else None
        print(row(name, paths[name], baseline))
    ratios = {"crops": paths["ours"]["samples_per_s"] / paths["baseline"]["samples_per_s"]}
    if "baseline_patchify" in paths:
        ratios["with_patchify"] = (
            paths["ours_patchify"]["samples_per_s"] / paths["baseline_patchify"]["samples_per_s"]
        )
    result["ratios"] = {k: round(v, 2) for k, v in ratios.items()}
    result["goals"] = {
        "1000_samples_per_s": paths["ours"]["samples_per_s"] >= 1000,
        "4x_baseline": ratios["crops"] >= 4,
    }
    if "with_patchify" in ratios:
        result["goals"]["4x_baseline_with_patchify"] = ratios["with_patchify"] >= 4
    model = result["model_side_patchify"] = model_side(samples, args.rounds)
    loader_ms = paths["ours_patchify"]["stage_ms"]["patchify"]
    result["loader_patchify_ms_per_sample"] = loader_ms
    print(
        f"goals: {paths['ours']['samples_per_s']:.0f} samples/s per core without patchify"
        f" ({'meets' if result['goals']['1000_samples_per_s'] else 'misses'} 1,000),"
        f" {ratios['crops']:.2f}x the baseline ({'meets' if result['goals']['4x_baseline'] else 'misses'} 4x)"
        + (f"; with patchify {ratios['with_patchify']:.2f}x"
           f" ({'meets' if result['goals']['4x_baseline_with_patchify'] else 'misses'} 4x)"
           if "with_patchify" in ratios else "")
    )
    print(
        f"patchify placement: loader-side (Numba) {loader_ms:.3f} ms/sample on a loader core;"
        f" model-side torch CPU, 1 thread, batch of {model['batch_samples']}:"
        f" {model['ms_per_batch']:.1f} ms/batch = {model['ms_per_sample']:.3f} ms/sample amortised"
    )
    if args.shards:
        result["full_loader"] = full_loader(args.shards, args.batches)
        print(f"full loader on {args.shards}: {result['full_loader']['samples_per_s']:.0f} samples/s per core"
              f" over {result['full_loader']['samples']} samples")
    return result


def full_loader(shards: Path, batches: int) -> dict:
    """Samples per second of build time of `make_loader` batches of 32 over the dataset at `shards`: the
    default crops and patch counts, loader-side patchify, seed 0, in this process (no workers)."""
    from pipeline.loader import load_manifests, make_loader

    data = DataConfig(datasets=[DatasetConfig(url=str(shards))], num_workers=0)
    loader, _ = make_loader(data, PatchifyConfig(), 0, load_manifests(data), epoch=0, global_batch=MODEL_BATCH,
                            rank=0, world=1)
    samples, seconds = 0, 0.0
    for i, batch in enumerate(loader):
        if i > batches:
            break
        if i:  # batch 0 warms up: the first shard's open and the compiled code's load
            samples += len(batch.positions)
            seconds += batch.load_seconds
    return {"batches": batches, "samples": samples, "samples_per_s": round(samples / seconds, 1)}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200, help=f"clouds per timed run (>= {MODEL_BATCH})")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="alternating rounds; each timing is the best")
    add_json_option(parser)
    parser.add_argument("--shards", type=Path, help="also time the whole loader over this sharded dataset")
    parser.add_argument("--batches", type=int, default=40, help="timed batches of 32 for --shards")
    args = parser.parse_args(argv)
    if args.samples < MODEL_BATCH:
        parser.error(f"--samples must be at least {MODEL_BATCH}")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return args


main = benchmark_main(parse_args, run)


if __name__ == "__main__":
    sys.exit(main())
