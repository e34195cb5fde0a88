"""Shapes per second per CPU core of the sharding hot path, against a plain-trimesh baseline.

Per shape, timed from mesh file bytes in memory to a sample written into an in-memory tar:

* ours: sha256 of the bytes, `sharding.meshio.decode_geometry`, `sharding.sampling.make_points`
  (16,384 points, Y-up -> Z-up, float32), the sample's fingerprints as a shard task takes them
  (`sharding.fingerprint`: exact of the geometry, descriptor of the points), then `<key>.points.npy`
  (np.save bytes) and `<key>.json` written with `tarfile`;
* baseline (what the reference does): the same sha256, `trimesh.load(..., force="mesh")` with its
  default processing, `trimesh.sample.sample_surface(mesh, 16384)`, the same permutation, cast and
  tar writing.

Inputs are generated up front and not timed: noisy displaced UV spheres and noisy tori with about
--faces faces (positions and faces only), exported as .obj and .glb bytes. One untimed shape warms
each path up before each timed run. Single-core numbers come from this one process with
OMP/MKL/OpenBLAS threads set to 1 before numpy is imported; each case is the best of 2 rounds, the
two paths alternating (the machine may be shared); the per-stage columns are mean milliseconds per
shape in that run. `ratio` compares the decode + sample + write paths (the baseline has no
fingerprints); `with fingerprints` counts our fingerprint stage too.

Ray scaling (skipped with --no-ray): a local `ray.init(num_cpus=2)` (start-up not timed, both
workers warmed up first), then all generated shapes of our path as 1 task, and as 2 parallel tasks
of half the shapes each; the inputs are `ray.put` before the clock starts. Each wall time is again
the best of 2 alternating rounds. Speed-up = wall time of 1 task / wall time of 2 tasks (2.0 is
perfect on 2 cores). The same split of a pure-Python spin loop gives the machine's own ceiling: on a
shared or oversubscribed VM two busy vCPUs may not give twice the throughput of one, whatever the
workload.

Run from the project root (about a minute on a 2-core machine):

    python -m bench.shard_throughput --shapes 6

The last printed line is `RESULT {json}`; --json PATH also writes that object to a file.
"""

from __future__ import annotations

from bench.common import one_core_threads

one_core_threads()  # before numpy is imported: measure one core

import argparse  # noqa: E402
import functools  # noqa: E402
import hashlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import tarfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import trimesh  # noqa: E402

from bench.common import add_json_option, benchmark_main, best_of_rounds  # noqa: E402
from configuration import PROJECT_ROOT  # noqa: E402
from sharding.fingerprint import geometry_fingerprint, shape_descriptor  # noqa: E402
from sharding.layouts import Z_UP_FROM_Y_UP  # noqa: E402
from sharding.meshio import decode_geometry  # noqa: E402
from sharding.records import Loaded  # noqa: E402
from sharding.sampling import SampleSpec, make_points, seed_from_key  # noqa: E402

SPEC = SampleSpec()
ROUNDS = 2  # every timing is the best of this many alternating rounds, against noise from other processes
STAGES = ("decode", "sample", "fingerprint", "write")  # decode includes the sha256 of the raw bytes
Item = tuple[str, bytes]  # (file name, file bytes)


def noisy_mesh(faces: int, index: int) -> trimesh.Trimesh:
    """A UV sphere (even index) or a torus (odd) of about `faces` faces, displaced by smooth noise."""
    rng = np.random.default_rng(index)
    if index % 2 == 0:
        side = max(3, round((faces / 4) ** 0.5) + 1)  # a UV sphere of count (r, c) has 4 c (r - 2) faces
        mesh = trimesh.creation.uv_sphere(radius=1.0, count=[side, side])
    else:
        minor = max(3, round((faces / 4) ** 0.5))  # a torus has 2 * major * minor faces
        mesh = trimesh.creation.torus(1.0, 0.35, major_sections=2 * minor, minor_sections=minor)
    vertices = np.asarray(mesh.vertices)
    phase, freq = rng.uniform(0, 2 * np.pi, 3), rng.uniform(2, 6, 3)
    bumps = 0.05 * np.sin(vertices * freq + phase).sum(axis=1) + rng.normal(0, 0.002, len(vertices))
    displaced = vertices + np.asarray(mesh.vertex_normals) * bumps[:, None]
    return trimesh.Trimesh(displaced * rng.uniform(0.5, 2.0), mesh.faces, process=False)


def export(mesh: trimesh.Trimesh, fmt: str) -> bytes:
    """`obj`: positions and faces; `obj-vn`: with vertex normals (`f v//n`, as scanned and CAD exports
    write them); `glb`: binary glTF."""
    if fmt.startswith("obj"):
        return mesh.export(file_type="obj", include_normals=fmt == "obj-vn", include_texture=False).encode()
    return mesh.export(file_type="glb")


def file_name(stem: str, fmt: str) -> str:
    return f"{stem}.{fmt.split('-')[0]}"


def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_sample(tar: tarfile.TarFile, key: str, points: np.ndarray, sha256: str) -> None:
    buf = io.BytesIO()
    np.save(buf, points, allow_pickle=False)
    add_member(tar, f"{key}.points.npy", buf.getvalue())
    meta = {"key": key, "num_points": len(points), "sha256": sha256}
    add_member(tar, f"{key}.json", json.dumps(meta, sort_keys=True).encode())


def decode_ours(name: str, data: bytes) -> Loaded:
    """As a shard task loads an input; the raw hash is taken by `run_batch` for both paths alike."""
    return Loaded(decode_geometry(data, name), "", y_up=True)


def sample_ours(loaded: Loaded, key: str) -> np.ndarray:
    return make_points(loaded, key, SPEC).points


def fingerprint_ours(loaded: Loaded, points: np.ndarray) -> None:
    geometry_fingerprint(loaded.geometry, loaded.y_up)
    shape_descriptor(points)


def decode_baseline(name: str, data: bytes) -> trimesh.Trimesh:
    return trimesh.load(io.BytesIO(data), file_type=Path(name).suffix[1:], force="mesh")


def sample_baseline(mesh: trimesh.Trimesh, key: str) -> np.ndarray:
    points, _ = trimesh.sample.sample_surface(mesh, SPEC.num_points, seed=seed_from_key(key))
    return points[:, Z_UP_FROM_Y_UP].astype(np.float32)


# (decode, sample, fingerprint or None)
Pipeline = tuple[Callable[[str, bytes], Any], Callable[[Any, str], np.ndarray], Callable[[Any, np.ndarray], None] | None]
OURS: Pipeline = (decode_ours, sample_ours, fingerprint_ours)
BASELINE: Pipeline = (decode_baseline, sample_baseline, None)


def run_batch(pipeline: Pipeline, items: list[Item]) -> tuple[float, dict[str, float], int]:
    """Run `pipeline` over `items` into one in-memory tar; returns (seconds, seconds per stage, tar bytes)."""
    decode, sample, fingerprint = pipeline
    stages = dict.fromkeys(STAGES, 0.0)
    buf = io.BytesIO()
    start = time.perf_counter()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for i, (name, data) in enumerate(items):
            key = f"bench_{i:06d}"
            t0 = time.perf_counter()
            sha256 = hashlib.sha256(data).hexdigest()
            geometry = decode(name, data)
            t1 = time.perf_counter()
            points = sample(geometry, key)
            t2 = time.perf_counter()
            if fingerprint is not None:
                fingerprint(geometry, points)
            t3 = time.perf_counter()
            write_sample(tar, key, points, sha256)
            t4 = time.perf_counter()
            stages["decode"] += t1 - t0
            stages["sample"] += t2 - t1
            stages["fingerprint"] += t3 - t2
            stages["write"] += t4 - t3
    return time.perf_counter() - start, stages, buf.tell()


SPIN_ITERATIONS = 4_000_000  # about half a second of pure-Python arithmetic on one core


def ray_task(items: list[Item]) -> int:
    """Our path over `items` inside a Ray worker; returns the tar size (proof the work was done)."""
    return run_batch(OURS, items)[2]


def spin(iterations: int) -> int:
    """CPU-only work (no memory traffic, no I/O): its speed-up is the most the machine's cores allow."""
    total = 0
    for i in range(iterations):
        total += i * i
    return total


def ray_scaling(items: list[Item]) -> dict:
    """Same work as 1 Ray task and as 2 parallel tasks, for our path and for the `spin` ceiling."""
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    # Workers import `sharding` from this checkout, whatever the current directory.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=256 * 2**20, log_to_driver=False)

    def wall(refs: Callable[[], list]) -> tuple[float]:
        start = time.perf_counter()
        ray.get(refs())
        return (time.perf_counter() - start,)

    try:
        task, spin_task = ray.remote(num_cpus=1)(ray_task), ray.remote(num_cpus=1)(spin)
        smallest = min(items, key=lambda item: len(item[1]))
        ray.get([task.remote([smallest]) for _ in range(2)])  # start and warm up both workers
        whole, halves = ray.put(items), [ray.put(items[0::2]), ray.put(items[1::2])]
        runs = {
            "one": lambda: [task.remote(whole)],
            "two": lambda: [task.remote(half) for half in halves],
            "spin_one": lambda: [spin_task.remote(SPIN_ITERATIONS)],
            "spin_two": lambda: [spin_task.remote(SPIN_ITERATIONS // 2) for _ in range(2)],
        }
        timed = best_of_rounds(ROUNDS, {name: functools.partial(wall, refs) for name, refs in runs.items()})
        best = {name: seconds for name, (seconds,) in timed.items()}
    finally:
        ray.shutdown()
    return {
        "shapes": len(items),
        "one_task_s": round(best["one"], 3),
        "two_tasks_s": round(best["two"], 3),
        "one_task_shapes_per_s": round(len(items) / best["one"], 2),
        "two_tasks_shapes_per_s": round(len(items) / best["two"], 2),
        "speedup": round(best["one"] / best["two"], 3),
        "cpu_bound_speedup": round(best["spin_one"] / best["spin_two"], 3),
    }


Timing = tuple[float, int, dict[str, float]]  # (seconds, shapes, seconds per stage)


def warm_run(pipeline: Pipeline, items: list[Item], warmup: Item) -> Timing:
    """`run_batch` over `items` after one untimed warm-up shape."""
    run_batch(pipeline, [warmup])
    seconds, stages, _ = run_batch(pipeline, items)
    return seconds, len(items), stages


def measure(items: list[Item], warmup: Item) -> tuple[Timing, Timing]:
    """(ours, baseline), each the fastest of ROUNDS runs, the two paths alternating."""
    best = best_of_rounds(ROUNDS, {"ours": functools.partial(warm_run, OURS, items, warmup),
                                   "baseline": functools.partial(warm_run, BASELINE, items, warmup)})
    return best["ours"], best["baseline"]


def combine(timings: list[Timing]) -> Timing:
    return (
        sum(t[0] for t in timings),
        sum(t[1] for t in timings),
        {stage: sum(t[2][stage] for t in timings) for stage in STAGES},
    )


def summary(ours: Timing, baseline: Timing) -> dict:
    result: dict = {}
    for label, (seconds, shapes, stages) in (("ours", ours), ("baseline", baseline)):
        result[label] = {
            "seconds": round(seconds, 4),
            "shapes_per_s": round(shapes / (seconds - stages["fingerprint"]), 2),
            "shapes_per_s_with_fingerprints": round(shapes / seconds, 2),
            "ms_per_shape": {stage: round(1e3 * stages[stage] / shapes, 2) for stage in STAGES},
        }
    result["ratio"] = round(result["ours"]["shapes_per_s"] / result["baseline"]["shapes_per_s"], 3)
    result["ratio_with_fingerprints"] = round(
        result["ours"]["shapes_per_s_with_fingerprints"] / result["baseline"]["shapes_per_s"], 3)
    return result


def row(fmt: str, faces: str, shapes: int, m: dict) -> str:
    ours_ms, base_ms = (
        "/".join(f"{m[path]['ms_per_shape'][stage]:.1f}" for stage in STAGES) for path in ("ours", "baseline")
    )
    speeds = (f"{m['ours']['shapes_per_s']:>9.2f} {m['baseline']['shapes_per_s']:>9.2f} {m['ratio']:>6.2f} "
              f"{m['ratio_with_fingerprints']:>8.2f}")
    return f"{fmt:<6} {faces:>8} {shapes:>6} {speeds}  {ours_ms:>24}  {base_ms:>24}"


def run(args: argparse.Namespace) -> dict:
    meshes = {faces: [noisy_mesh(faces, i) for i in range(args.shapes)] for faces in args.faces}
    warm_mesh = noisy_mesh(min(args.faces), args.shapes)
    result: dict = {
        "num_points": SPEC.num_points,
        "threads": os.environ["OMP_NUM_THREADS"],
        "trimesh": trimesh.__version__,
        "numpy": np.__version__,
        "cases": [],
        "by_format": {},
    }
    header = f"{'fmt':<6} {'faces':>8} {'shapes':>6} {'ours/s':>9} {'base/s':>9} {'ratio':>6} {'with fp':>8}"
    print(f"{header}  {'ours ms dec/smp/fp/wr':>24}  {'base ms dec/smp/fp/wr':>24}")
    all_items: list[Item] = []
    for fmt in args.formats:
        warmup = (file_name("warmup", fmt), export(warm_mesh, fmt))
        ours_timings: list[Timing] = []
        base_timings: list[Timing] = []
        for faces, group in meshes.items():
            items = [(file_name(f"shape{i}", fmt), export(mesh, fmt)) for i, mesh in enumerate(group)]
            ours, base = measure(items, warmup)
            ours_timings.append(ours)
            base_timings.append(base)
            case = summary(ours_timings[-1], base_timings[-1])
            actual = round(float(np.mean([len(mesh.faces) for mesh in group])))
            mib = sum(len(data) for _, data in items) / len(items) / 2**20
            result["cases"].append(
                {"format": fmt, "faces": actual, "shapes": len(items), "mib_per_file": round(mib, 2), **case}
            )
            print(row(fmt, str(actual), len(items), case))
            all_items += items
        result["by_format"][fmt] = summary(combine(ours_timings), combine(base_timings))
        print(row(fmt, "all", len(args.faces) * args.shapes, result["by_format"][fmt]))
    if not args.no_ray:
        print(f"ray: {len(all_items)} shapes (our path), 1 task vs 2 parallel tasks on num_cpus=2 ...")
        r = result["ray"] = ray_scaling(all_items)
        print(
            f"ray: 1 task {r['one_task_s']:.2f} s ({r['one_task_shapes_per_s']:.2f} shapes/s),"
            f" 2 tasks {r['two_tasks_s']:.2f} s ({r['two_tasks_shapes_per_s']:.2f} shapes/s):"
            f" speed-up {r['speedup']:.2f}x (pure-CPU ceiling of this machine, same split:"
            f" {r['cpu_bound_speedup']:.2f}x)"
        )
    return result


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=int, nargs="+", default=[10000, 50000, 100000], help="face counts")
    parser.add_argument("--shapes", type=int, default=8, help="shapes per face count (and format)")
    parser.add_argument("--formats", nargs="+", choices=["obj", "obj-vn", "glb"],
                        default=["obj", "obj-vn", "glb"])
    parser.add_argument("--no-ray", action="store_true", help="skip the 1 -> 2 Ray worker scaling run")
    add_json_option(parser)
    return parser.parse_args(argv)


main = benchmark_main(parse_args, run)


if __name__ == "__main__":
    sys.exit(main())
