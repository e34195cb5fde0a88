"""Near-duplicate matching measured: precision and recall on planted copies, and its speed at scale.

Originals are synthetic shapes (`sharding.synthetic`, all 16 families), each sampled as the sharder
samples it (16,384 points). For the first `--planted` of them we plant one copy of each kind, each
sampled again under another key (so no point is shared with the original):

* rotated: a random rotation in SO(3);
* rescaled: a uniform scale in [0.5, 2];
* resampled: nothing else changed;
* jittered: Gaussian noise of 1% of the RMS radius on every point;
* other format: the mesh written as PLY, OBJ or GLB by trimesh and read back by our decoders.

Every pair of clouds closer than the tolerance is a predicted duplicate. A predicted pair is right
when it joins a copy with its original (or two copies of one original); recall is over the planted
pairs. Other shapes of the same family are negatives, so precision counts look-alikes as errors.
Exclusion scores what the dedup stage would drop (`sharding.dedup.matching.duplicates`, greedy in
corpus order, originals first): precision is the share of dropped clouds that are planted copies,
recall the share of planted copies dropped.
Speed: the descriptor per shape, the exact fingerprint per 100K vertices, and `near_pairs` and the
greedy pass over descriptors of `--scale` shapes, and their match against TEST_SHAPES test shapes,
extrapolated to 930K at the measured rate.

    python -m bench.dedup_quality --originals 400 --planted 100
"""

from __future__ import annotations

from bench.common import one_core_threads

one_core_threads()

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import trimesh  # noqa: E402
from scipy.spatial.transform import Rotation  # noqa: E402

from bench.common import add_json_option, benchmark_main  # noqa: E402
from sharding.dedup.matching import copies_of_test_shapes, duplicates  # noqa: E402
from sharding.fingerprint import exact_fingerprint, near_pairs, shape_descriptor  # noqa: E402
from sharding.meshio import decode_geometry  # noqa: E402
from sharding.records import Loaded, MeshData  # noqa: E402
from sharding.sampling import SampleSpec, make_points  # noqa: E402
from sharding.synthetic import generate_shape  # noqa: E402

SPEC = SampleSpec()
KINDS = ("rotated", "rescaled", "resampled", "jittered", "other format")
FORMATS = ("ply", "obj", "glb")
TEST_SHAPES = 55_000  # ModelNet40, ScanObjectNN and ShapeNetPart test splits and Objaverse-LVIS


def sampled(geometry, key: str) -> np.ndarray:
    return make_points(Loaded(geometry, "", False), key, SPEC).points.astype(np.float64)


def planted_copy(mesh: MeshData, points: np.ndarray, kind: str, index: int, rng: np.random.Generator) -> np.ndarray:
    key = f"copy_{kind}_{index}"
    if kind == "rotated":
        return sampled(MeshData(mesh.vertices @ Rotation.random(random_state=rng).as_matrix().T, mesh.faces), key)
    if kind == "rescaled":
        return sampled(MeshData(mesh.vertices * rng.uniform(0.5, 2.0), mesh.faces), key)
    if kind == "resampled":
        return sampled(mesh, key)
    if kind == "jittered":
        again = sampled(mesh, key)
        rms = np.sqrt(((again - again.mean(axis=0)) ** 2).sum(axis=1).mean())
        return again + rng.normal(0.0, 0.01 * rms, again.shape)
    fmt = FORMATS[index % len(FORMATS)]
    data = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False).export(file_type=fmt)
    return sampled(decode_geometry(data if isinstance(data, bytes) else data.encode(), f"copy.{fmt}"), key)


def corpus(originals: int, planted: int) -> tuple[list[np.ndarray], list[int], list[str], int]:
    """(clouds, the original each cloud is a copy of or is, its kind, exact-fingerprint matches of
    format copies)."""
    rng = np.random.default_rng(0)
    clouds, origin, kinds, exact_matches = [], [], [], 0
    meshes = []
    for i in range(originals):
        mesh, _ = generate_shape(i, 0)
        meshes.append(mesh)
        clouds.append(sampled(mesh, f"synthetic_{i:07d}"))
        origin.append(i)
        kinds.append("original")
    for i in range(planted):
        for kind in KINDS:
            clouds.append(planted_copy(meshes[i], clouds[i], kind, i, rng))
            origin.append(i)
            kinds.append(kind)
        fmt = FORMATS[i % len(FORMATS)]
        data = trimesh.Trimesh(meshes[i].vertices, meshes[i].faces, process=False).export(file_type=fmt)
        again = decode_geometry(data if isinstance(data, bytes) else data.encode(), f"copy.{fmt}")
        exact_matches += exact_fingerprint(again.vertices) == exact_fingerprint(meshes[i].vertices)
    return clouds, origin, kinds, exact_matches


def quality(descriptors: np.ndarray, origin: np.ndarray, kinds: list[str], tolerances: list[float]) -> list[dict]:
    same = origin[:, None] == origin[None, :]
    planted = {(int(i), int(j)) for i, j in zip(*np.nonzero(np.triu(same, 1)))}
    rows = []
    for tolerance in tolerances:
        pairs = {tuple(map(int, p)) for p in near_pairs(descriptors, tolerance)}
        found = pairs & planted
        by_kind = {}
        for kind in KINDS:
            wanted = {(o, c) for o, c in planted if kinds[c] == kind and kinds[o] == "original"}
            by_kind[kind] = round(len(wanted & pairs) / max(len(wanted), 1), 3)
        distinct = np.array([str(i).encode() for i in range(len(origin))], dtype="S64")
        dropped = duplicates(distinct, descriptors, tolerance).found
        copies = np.asarray(kinds) != "original"
        rows.append({"tolerance": tolerance, "predicted": len(pairs), "planted": len(planted),
                     "precision": round(len(found) / max(len(pairs), 1), 3),
                     "recall": round(len(found) / max(len(planted), 1), 3), "recall_by_kind": by_kind,
                     "dropped": int(dropped.sum()),
                     "drop_precision": round(float(copies[dropped].mean()) if dropped.any() else 0.0, 3),
                     "drop_recall": round(float(dropped[copies].mean()), 3)})
    return rows


def speed(descriptors: np.ndarray, scale: int, tolerance: float, clouds: list[np.ndarray]) -> dict:
    start = time.perf_counter()
    for cloud in clouds[:50]:
        shape_descriptor(cloud)
    per_shape = (time.perf_counter() - start) / min(50, len(clouds))
    rng = np.random.default_rng(1)
    # `scale` descriptors spread like real ones: each is a real descriptor, perturbed by more than the tolerance
    base = descriptors[rng.integers(0, len(descriptors), scale)]
    spread = base + rng.normal(0.0, 2 * tolerance / np.sqrt(descriptors.shape[1]), base.shape)
    start = time.perf_counter()
    found = near_pairs(spread, tolerance)
    seconds = time.perf_counter() - start
    start = time.perf_counter()
    duplicates(np.array([str(i).encode() for i in range(scale)], dtype="S64"), spread, tolerance)
    greedy = time.perf_counter() - start
    test = descriptors[rng.integers(0, len(descriptors), TEST_SHAPES)]
    test = test + rng.normal(0.0, 2 * tolerance / np.sqrt(descriptors.shape[1]), test.shape)
    start = time.perf_counter()
    copies_of_test_shapes(np.zeros(scale, "S64"), spread, np.ones(TEST_SHAPES, "S64"), test, tolerance)
    leaks = time.perf_counter() - start
    vertices = rng.normal(size=(100_000, 3))
    exact_fingerprint(vertices)
    start = time.perf_counter()
    for _ in range(10):
        exact_fingerprint(vertices)
    exact_ms = (time.perf_counter() - start) / 10 * 1e3
    return {"descriptor_ms_per_shape": round(per_shape * 1e3, 2), "exact_ms_per_100k_vertices": round(exact_ms, 2),
            "match_shapes": scale, "match_seconds": round(seconds, 2), "match_pairs": len(found),
            "dedup_seconds": round(greedy, 2), "test_shapes": TEST_SHAPES, "test_set_seconds": round(leaks, 2),
            "test_set_930k_seconds_if_linear": round(leaks * 930_000 / scale, 1),
            "descriptors_930k_core_hours": round(per_shape * 930_000 / 3600, 2),
            "match_930k_seconds_if_linear": round(seconds * 930_000 / scale, 1),
            "dedup_930k_seconds_if_linear": round(greedy * 930_000 / scale, 1)}


def run(args: argparse.Namespace) -> dict:
    start = time.perf_counter()
    clouds, origin, kinds, exact_matches = corpus(args.originals, args.planted)
    descriptors = np.stack([shape_descriptor(c) for c in clouds])
    print(f"{len(clouds)} clouds ({args.originals} originals, {args.planted} x {len(KINDS)} copies) in "
          f"{time.perf_counter() - start:.0f} s")
    rows = quality(descriptors, np.asarray(origin), kinds, args.tolerances)
    print("tolerance  predicted  precision  recall  " + "  ".join(f"{k:>12}" for k in KINDS)
          + "  dropped  drop precision  drop recall")
    for r in rows:
        print(f"{r['tolerance']:>9.3f}  {r['predicted']:>9}  {r['precision']:>9.3f}  {r['recall']:>6.3f}  "
              + "  ".join(f"{r['recall_by_kind'][k]:>12.3f}" for k in KINDS)
              + f"  {r['dropped']:>7}  {r['drop_precision']:>14.3f}  {r['drop_recall']:>11.3f}")
    print(f"exact fingerprint: {exact_matches} of {args.planted} format copies match their original")
    fast = speed(descriptors, args.scale, args.speed_tolerance, clouds)
    print(f"descriptor: {fast['descriptor_ms_per_shape']} ms per shape ({fast['descriptors_930k_core_hours']} core-hours "
          f"for 930K); exact: {fast['exact_ms_per_100k_vertices']} ms per 100K vertices; matching {args.scale} "
          f"descriptors: {fast['match_seconds']} s, whole greedy pass {fast['dedup_seconds']} s "
          f"(x{930_000 / args.scale:.0f} if linear: {fast['match_930k_seconds_if_linear']} s and "
          f"{fast['dedup_930k_seconds_if_linear']} s for 930K); against {TEST_SHAPES} test shapes "
          f"{fast['test_set_seconds']} s ({fast['test_set_930k_seconds_if_linear']} s for 930K)")
    return {"originals": args.originals, "planted": args.planted, "quality": rows,
            "exact_format_copies_matched": exact_matches, "speed": fast}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--originals", type=int, default=400)
    parser.add_argument("--planted", type=int, default=100)
    parser.add_argument("--tolerances", type=float, nargs="+", default=[0.02, 0.025, 0.03, 0.035, 0.04])
    parser.add_argument("--speed-tolerance", type=float, default=0.03)
    parser.add_argument("--scale", type=int, default=50_000)
    add_json_option(parser)
    return parser.parse_args(argv)


main = benchmark_main(parse_args, run)


if __name__ == "__main__":
    sys.exit(main())
