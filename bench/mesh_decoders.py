"""Mesh decoders compared: what each reads of real files, and how fast it reads large ones, on one core.

Candidates: ours (`sharding.meshio.decode_geometry`), trimesh, and, when installed, point-cloud-utils,
open3d (open3d-cpu) and assimp-py, loaded by name. They are not project dependencies: install them beside the venv to
compare (`pip install --target DIR point-cloud-utils open3d-cpu assimp-py`, then `PYTHONPATH=DIR`).
The three take a file path, so they read from a file (as a shard task would have to, after writing the
bytes it fetched); ours and trimesh take the bytes.

* Real files: every .obj/.ply/.off/.stl/.gltf/.glb of Debian's assimp-testmodels (`--models`), some of
  them broken on purpose, each read in a forked child (a crash is counted, not fatal). A file counts as read when the decoder returns a surface with positive area
  and finite vertices, or a cloud of finite points (all scene parts together, transforms applied where
  the decoder does so); an exception or anything else is a miss.
* Speed: noisy spheres of about `--faces` faces written by trimesh as OBJ, OBJ with normals, binary PLY,
  OFF, binary STL and GLB; milliseconds per file, best of `--rounds`, and each decoder's surface area
  over trimesh's (1.000 when it read the same surface).

    PYTHONPATH=/tmp/cand python -m bench.mesh_decoders --json /tmp/decoders.json
"""

from __future__ import annotations

from bench.common import one_core_threads

one_core_threads()  # before numpy is imported: measure one core

import argparse  # noqa: E402
import functools  # noqa: E402
import importlib  # noqa: E402
import io  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections import Counter  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from types import ModuleType  # noqa: E402

import numpy as np  # noqa: E402
import trimesh  # noqa: E402

from bench.common import add_json_option, benchmark_main  # noqa: E402
from bench.shard_throughput import noisy_mesh  # noqa: E402
from sharding.containers import DirContainer  # noqa: E402
from sharding.meshio import decode_geometry  # noqa: E402
from sharding.records import MeshData  # noqa: E402

FORMATS = (".obj", ".ply", ".off", ".stl", ".gltf", ".glb")
Arrays = tuple[np.ndarray, np.ndarray]  # (vertices (V, 3), faces (F, 3)); no faces for a cloud
Decoder = Callable[[Path], Arrays]


def ours(path: Path) -> Arrays:
    geometry = decode_geometry(path.read_bytes(), path.name, DirContainer(str(path.parent)), path.name)
    if isinstance(geometry, MeshData):
        return geometry.vertices, geometry.faces
    return geometry.points, np.empty((0, 3), dtype=np.int64)


def with_trimesh(path: Path) -> Arrays:
    loaded = trimesh.load(io.BytesIO(path.read_bytes()), file_type=path.suffix[1:].lower(),
                          resolver=trimesh.resolvers.FilePathResolver(str(path)))
    scene = loaded if isinstance(loaded, trimesh.Scene) else trimesh.Scene(loaded)
    mesh = scene.to_mesh()
    if len(mesh.faces):
        return np.asarray(mesh.vertices), np.asarray(mesh.faces)
    clouds = [g.vertices for g in scene.dump() if isinstance(g, trimesh.PointCloud)]
    return np.concatenate(clouds) if clouds else np.empty((0, 3)), np.empty((0, 3), dtype=np.int64)


def with_pcu(pcu: ModuleType, path: Path) -> Arrays:
    vertices, faces = pcu.load_mesh_vf(str(path))
    return np.asarray(vertices, dtype=np.float64), np.asarray(faces).reshape(-1, 3)


def with_open3d(o3d: ModuleType, path: Path) -> Arrays:
    mesh = o3d.io.read_triangle_mesh(str(path))
    if len(mesh.triangles):
        return np.asarray(mesh.vertices), np.asarray(mesh.triangles)
    return np.asarray(o3d.io.read_point_cloud(str(path)).points), np.empty((0, 3), dtype=np.int64)


def with_assimp(assimp_py: ModuleType, path: Path) -> Arrays:
    scene = assimp_py.import_file(str(path), assimp_py.Process_Triangulate | assimp_py.Process_PreTransformVertices)
    vertices, faces, offset = [], [], 0
    for mesh in scene.meshes:
        v = np.asarray(mesh.vertices, dtype=np.float64).reshape(-1, 3)
        f = np.asarray(mesh.indices, dtype=np.int64).reshape(-1)
        if len(f) % 3 == 0:  # triangles only (points and lines come as 1- and 2-index faces)
            faces.append(f.reshape(-1, 3) + offset)
        vertices.append(v)
        offset += len(v)
    return (np.concatenate(vertices) if vertices else np.empty((0, 3)),
            np.concatenate(faces) if faces else np.empty((0, 3), dtype=np.int64))


# Optional third-party candidates, not project dependencies: (name, module, decoder taking the module).
OPTIONAL = (("point-cloud-utils", "point_cloud_utils", with_pcu), ("open3d", "open3d", with_open3d),
            ("assimp-py", "assimp_py", with_assimp))


def candidates() -> dict[str, Decoder | str]:
    """Decoder by name, or the reason it cannot run here."""
    found: dict[str, Decoder | str] = {"ours": ours, "trimesh": with_trimesh}
    for name, module, decoder in OPTIONAL:
        try:
            found[name] = functools.partial(decoder, importlib.import_module(module))
        except ImportError as err:
            found[name] = f"not installed ({err})"
    return found


def read_well(decoder: Decoder, path: Path) -> bool:
    """A surface with area and finite vertices, or a finite cloud (see the module docstring)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            vertices, faces = decoder(path)
        vertices = np.asarray(vertices, dtype=np.float64).reshape(-1, 3)
        if not len(vertices) or not np.isfinite(vertices).all():
            return False
        if len(faces) == 0:
            return True
        if faces.min() < 0 or faces.max() >= len(vertices):
            return False
        return surface_area(vertices, faces) > 0
    except Exception:  # any failure of a third-party decoder is a miss
        return False


def surface_area(vertices: np.ndarray, faces: np.ndarray) -> float:
    a, b, c = (vertices[faces[:, k]] for k in range(3))
    return float(np.linalg.norm(np.cross(b - a, c - a), axis=1).sum() / 2)


def isolated(decoder: Decoder, path: Path) -> bool | None:
    """`read_well` in a forked child, so that a decoder that crashes the process (assimp-py corrupted its
    heap on the invalid files) costs one file, not the run: None when the child died."""
    readable, writable = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(readable)
        os.write(writable, b"1" if read_well(decoder, path) else b"0")
        os._exit(0)
    os.close(writable)
    answer = os.read(readable, 1)
    os.close(readable)
    os.waitpid(pid, 0)
    return answer == b"1" if answer else None


def real_files(models: Path, decoders: dict[str, Decoder]) -> dict:
    files = sorted(p for p in models.rglob("*") if p.is_file() and p.suffix.lower() in FORMATS)
    totals = Counter(p.suffix.lower() for p in files)
    result = {"files": dict(totals), "read": {}, "crashed": {}, "seconds": {}}
    for name, decoder in decoders.items():
        start = time.perf_counter()
        outcome = {p: isolated(decoder, p) for p in files}
        result["seconds"][name] = round(time.perf_counter() - start, 2)
        read = Counter(p.suffix.lower() for p, ok in outcome.items() if ok)
        result["read"][name] = {ext: read[ext] for ext in FORMATS if totals[ext]}
        result["crashed"][name] = sorted(str(p.relative_to(models)) for p, ok in outcome.items() if ok is None)
    return result


def written(mesh: trimesh.Trimesh, fmt: str, folder: Path) -> Path:
    """`mesh` as one file of format `fmt` (obj, obj-vn, ply, off, stl, glb) in `folder`."""
    ext = fmt.split("-")[0]
    options = {"obj": {"include_normals": fmt == "obj-vn", "include_texture": False}}.get(ext, {})
    data = mesh.export(file_type=ext, **options)
    path = folder / f"{fmt}.{ext}"
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def speed(faces: int, rounds: int, decoders: dict[str, Decoder]) -> dict:
    mesh = noisy_mesh(faces, 0)
    reference = mesh.area
    result: dict = {"faces": len(mesh.faces), "formats": {}}
    with tempfile.TemporaryDirectory() as folder:
        for fmt in ("obj", "obj-vn", "ply", "off", "stl", "glb"):
            path = written(mesh, fmt, Path(folder))
            row = result["formats"][fmt] = {"mib": round(path.stat().st_size / 2**20, 2)}
            for name, decoder in decoders.items():
                try:
                    best = min(timed(decoder, path) for _ in range(rounds))
                    vertices, faces_ = decoder(path)
                    row[name] = {"ms": round(best * 1e3, 1),
                                 "area_ratio": round(surface_area(np.asarray(vertices, float), faces_) / reference, 4)}
                except Exception as err:  # reported, not fatal: a decoder may not read a format
                    row[name] = {"error": f"{type(err).__name__}: {str(err)[:80]}"}
    return result


def timed(decoder: Decoder, path: Path) -> float:
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        decoder(path)
    return time.perf_counter() - start


def run(args: argparse.Namespace) -> dict:
    found = candidates()
    decoders = {name: d for name, d in found.items() if callable(d)}
    result: dict = {"threads": os.environ["OMP_NUM_THREADS"], "missing": {n: d for n, d in found.items()
                                                                        if not callable(d)}}
    if args.models.is_dir():
        result["real_files"] = real = real_files(args.models, decoders)
        print("real files read (of " + ", ".join(f"{n} {e}" for e, n in real["files"].items()) + "):")
        for name, read in real["read"].items():
            crashed = real["crashed"][name]
            print(f"  {name:<18} " + "  ".join(f"{ext} {n}" for ext, n in read.items())
                  + f"  total {sum(read.values())}  ({real['seconds'][name]} s)"
                  + (f"  crashed the process on {', '.join(crashed)}" if crashed else ""))
    else:
        print(f"{args.models} not found: real files skipped (apt-get install assimp-testmodels)")
    result["speed"] = fast = speed(args.faces, args.rounds, decoders)
    print(f"speed, {fast['faces']} faces, ms per file (area / trimesh's):")
    for fmt, row in fast["formats"].items():
        cells = [f"{name} " + (f"{c['ms']:.1f} ({c['area_ratio']:.3f})" if "ms" in c else c["error"][:40])
                 for name, c in row.items() if name != "mib"]
        print(f"  {fmt:<7} {row['mib']:>6.2f} MiB  " + "  ".join(cells))
    for name, why in result["missing"].items():
        print(f"{name}: {why}")
    return result


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=Path("/usr/share/assimp/models"))
    parser.add_argument("--faces", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    add_json_option(parser)
    return parser.parse_args(argv)


main = benchmark_main(parse_args, run)


if __name__ == "__main__":
    sys.exit(main())
