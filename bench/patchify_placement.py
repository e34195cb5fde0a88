"""Where FPS + kNN belong: the model's torch patchify on the device against the loader's compiled CPU kernels.

Both sides get the same crops: --batch-size clouds of 16,384 points (random ellipsoid surfaces) cut by
the loader's own multi-crop (`pipeline.crops.multi_crop`) with the crops and patch counts of a
pretraining config (S: 2 x 1024-point global crops of 64 x 32 patches, 4 x 256-point local crops of
16 x 32). Only the work that would move is timed, the FPS centres and kNN groups; normalisation and
the gather run in the model either way.

* device: `model.patchify.farthest_point_sample` + `knn_group` over all crops of the batch, one call
  per crop kind, as the model does for a batch; median of --repeats after warm-up, synchronised;
* cpu: `pipeline.patchify.patch_indices_from` per shape, as a loader worker calls it, on one thread:
  ms per shape is the cost on one loader core; best of --rounds rounds; `multi_crop` per shape is timed
  too, the rest of a worker's per-sample work (without the tar read);
* agreement: on how many crops the loader's indices, computed from the device FPS's start points,
  equal the device's, and on how many they hold the same neighbour sets (exactly tied distances
  may be ordered differently; the tokenizer max-pools each group, so that order is immaterial).

    python -m bench.patchify_placement --config configs/pretrain/asymdsd_s_shapenet.yaml --device cuda

The last printed line is `RESULT {json}`; --json PATH also writes it to a file.
"""

from __future__ import annotations

from bench.common import one_core_threads

one_core_threads()  # before numpy is imported: the CPU side is one loader core

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.common import add_json_option, benchmark_main, best_of_rounds  # noqa: E402
from bench.synthetic import ellipsoid_crops  # noqa: E402
from launch.training.config import load_pretrain_config  # noqa: E402
from model.patchify import farthest_point_sample, knn_group  # noqa: E402
from pipeline.config import MultiCropConfig  # noqa: E402
from pipeline.crops import Crops, multi_crop  # noqa: E402
from pipeline.loader import sample_rng  # noqa: E402
from pipeline.patchify import patch_indices_from  # noqa: E402

CLOUD_POINTS = 16384


@dataclass
class CropKind:
    """One crop kind of the whole batch: (shapes, crops, points, 3) padded crops and their patch counts."""

    name: str
    points: np.ndarray
    num_points: np.ndarray  # (shapes, crops)
    patches: int
    patch_size: int


def loader_crops(spec: MultiCropConfig, shapes: int, patches: dict[str, tuple[int, int]]) -> tuple[list[CropKind], float]:
    """The loader's crops of `shapes` ellipsoid clouds, and the multi-crop's mean seconds per shape."""
    clouds = ellipsoid_crops(shapes, 1, CLOUD_POINTS, torch.Generator().manual_seed(0)).points[:, 0].numpy()
    multi_crop(clouds[0], spec, sample_rng(0, 0, 0))  # compiled kernels: load or compile before timing
    start = time.perf_counter()
    per_shape = [multi_crop(cloud, spec, sample_rng(0, 0, i)) for i, cloud in enumerate(clouds)]
    seconds = (time.perf_counter() - start) / shapes
    kinds = []
    for k, name in enumerate(patches):
        crops: list[Crops] = [shape[k] for shape in per_shape]
        kinds.append(CropKind(name, np.stack([c.points for c in crops]), np.stack([c.num_points for c in crops]),
                              *patches[name]))
    return kinds, seconds


def on_device(kind: CropKind, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The kind's crops flattened to (crops, points, 3) and their counts, on the device."""
    return (torch.from_numpy(kind.points).flatten(0, 1).to(device),
            torch.from_numpy(kind.num_points).flatten().to(device))


def device_indices(kind: CropKind, crops: tuple[torch.Tensor, torch.Tensor],
                   generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    points, num_points = crops
    centers = farthest_point_sample(points, num_points, kind.patches, generator)
    return centers, knn_group(points, num_points, centers, kind.patch_size)


def time_device(kinds: list[CropKind], device: torch.device, repeats: int) -> list[float]:
    """Seconds per batch of FPS + kNN over every crop kind (crops already on the device), one sample
    per repeat after 2 warm-up runs."""
    generator = torch.Generator(device).manual_seed(0)
    crops = [on_device(kind, device) for kind in kinds]
    samples = []
    for i in range(repeats + 2):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        for kind, kind_crops in zip(kinds, crops):
            device_indices(kind, kind_crops, generator)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= 2:
            samples.append(time.perf_counter() - start)
    return samples


def loader_indices(kind: CropKind, shape: int, start: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return patch_indices_from(kind.points[shape], kind.num_points[shape], kind.patches, kind.patch_size, start)


def time_cpu(kinds: list[CropKind], starts: list[np.ndarray], rounds: int) -> float:
    """Best over `rounds` of the mean seconds per shape of the loader's patch indices, shape by shape."""
    shapes = len(kinds[0].points)
    for kind, start in zip(kinds, starts):
        loader_indices(kind, 0, start[0])  # compiled kernels: load or compile before timing

    def one_round() -> tuple[float]:
        t0 = time.perf_counter()
        for shape in range(shapes):
            for kind, start in zip(kinds, starts):
                loader_indices(kind, shape, start[shape])
        return ((time.perf_counter() - t0) / shapes,)

    return best_of_rounds(rounds, {"cpu": one_round})["cpu"][0]


@dataclass
class Agreement:
    identical: int = 0  # crops whose loader indices equal the device's
    same_sets: int = 0  # crops with the same centres and, per centre, the same neighbours in any order
    crops: int = 0


def agreement(kinds: list[CropKind], device: torch.device) -> tuple[Agreement, list[np.ndarray]]:
    """How far the loader's indices, from the device FPS's start points, agree with the device's; and
    those starts per kind as (shapes, crops). Neighbours at exactly equal distances may come in another
    order (the tokenizer max-pools a group, so the order does not change the model)."""
    agree = Agreement()
    starts = []
    generator = torch.Generator(device).manual_seed(1)
    for kind in kinds:
        shapes, count = kind.num_points.shape
        centers, groups = (t.cpu().numpy().reshape(shapes, count, *t.shape[1:])
                           for t in device_indices(kind, on_device(kind, device), generator))
        start = centers[:, :, 0]
        starts.append(start)
        for shape in range(shapes):
            c, g = loader_indices(kind, shape, start[shape])
            for i in range(count):
                same_centers = np.array_equal(c[i], centers[shape, i])
                agree.identical += int(same_centers and np.array_equal(g[i], groups[shape, i]))
                agree.same_sets += int(same_centers and np.array_equal(np.sort(g[i]), np.sort(groups[shape, i])))
                agree.crops += 1
    return agree, starts


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(1)  # the CPU side is one loader core
    cfg = load_pretrain_config(args.config)
    device = torch.device(args.device)
    p = cfg.model.patchify
    patches = {"global": (p.global_patches, p.patch_size)}
    crops = cfg.crop_data()
    if crops.local_crops is not None:
        patches["local"] = (p.local_patches, p.patch_size)
    kinds, crops_s = loader_crops(crops, args.batch_size, patches)
    agree, starts = agreement(kinds, device)
    device_s = statistics.median(time_device(kinds, device, args.repeats))
    cpu_s = time_cpu(kinds, starts, args.rounds)
    return {
        "config": args.config, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "batch_size": args.batch_size,
        "crops": {k.name: {"crops": int(k.num_points.size), "points": int(k.points.shape[2]), "patches": k.patches,
                           "patch_size": k.patch_size} for k in kinds},
        "device_ms_per_batch": 1e3 * device_s, "device_ms_per_shape": 1e3 * device_s / args.batch_size,
        "cpu_patchify_ms_per_shape": 1e3 * cpu_s, "cpu_patchify_shapes_per_s_per_core": 1.0 / cpu_s,
        "cpu_crops_ms_per_shape": 1e3 * crops_s,
        "indices_identical_crops": agree.identical, "same_neighbour_sets_crops": agree.same_sets,
        "crops_total": agree.crops,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="pretraining YAML: its crops and the model's patch counts")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=128, help="shapes whose crops make one batch")
    parser.add_argument("--repeats", type=int, default=10, help="timed device runs (the median is reported)")
    parser.add_argument("--rounds", type=int, default=2, help="CPU rounds over the batch (the best is reported)")
    add_json_option(parser)
    return parser.parse_args(argv)


def show(result: dict) -> None:
    print(f"patchify of {result['batch_size']} shapes' crops: {result['device']} {result['device_ms_per_batch']:.2f} ms"
          f" per batch ({result['device_ms_per_shape']:.3f} ms/shape); loader CPU"
          f" {result['cpu_patchify_ms_per_shape']:.3f} ms/shape on one core"
          f" ({result['cpu_patchify_shapes_per_s_per_core']:.0f} shapes/s), crops"
          f" {result['cpu_crops_ms_per_shape']:.3f} ms/shape; identical indices on"
          f" {result['indices_identical_crops']}/{result['crops_total']} crops, the same neighbour sets on"
          f" {result['same_neighbour_sets_crops']}")


main = benchmark_main(parse_args, run, show)


if __name__ == "__main__":
    sys.exit(main())
