"""Decode mesh and point-cloud files from bytes.

Meshes (.obj .off .ply .stl .glb .gltf) go to the project's reader of their format (sharding.decoders:
polygons triangulated, glTF scenes flattened with their node transforms, Draco decoded); a mesh file
with vertices and no faces is a point cloud. Point clouds also come from .npy/.npz (never with
pickles), text (.xyz .pts .txt) and .h5/.hdf5. Materials and textures are skipped: only geometry is
sampled. Arrays packed in an .npz or HDF5 file are held to `max_bytes` before they are unpacked.
Errors name the file and say what is wrong with it, but never quote its content.
"""

from __future__ import annotations

import io
import posixpath
from collections.abc import Callable

import h5py
import numpy as np

from sharding.containers import Container
from sharding.decoders import gltf, obj, off, ply, stl
from sharding.limits import Limits, check_size
from sharding.records import Geometry, PointData, ShapeError, error_text

MESH_SUFFIXES = (".obj", ".off", ".ply", ".stl", ".glb", ".gltf")
POINT_SUFFIXES = (".npy", ".npz", ".xyz", ".pts", ".txt", ".h5", ".hdf5")
POINT_KEYS = ("points", "xyz", "data", "pos", "coords")
READERS = {".obj": obj.read, ".off": off.read, ".ply": ply.read, ".stl": stl.read}


def suffix(name: str) -> str:
    return posixpath.splitext(name.lower())[1]


def sibling_reader(container: Container, member: str) -> Callable[[str], bytes]:
    """Reads the files a .gltf refers to (its buffers), relative to it, from the same container."""
    base = posixpath.dirname(member)
    return lambda relative: container.read(posixpath.join(base, relative))


def _xyz(array: np.ndarray, what: str) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim != 2 or array.shape[1] < 3 or array.dtype.kind not in "fiu":
        raise ShapeError("decode", f"{what}: expected an (N, >=3) numeric array, got {array.dtype} {array.shape}")
    return array[:, :3].astype(np.float64)


def _first_array(named: dict[str, np.ndarray], what: str) -> np.ndarray:
    for key in POINT_KEYS:
        if key in named:
            return _xyz(named[key], f"{what}[{key}]")
    for key, value in named.items():
        if np.ndim(value) == 2 and np.shape(value)[1] >= 3:
            return _xyz(value, f"{what}[{key}]")
    raise ShapeError("decode", f"{what}: no (N, >=3) array among {sorted(named)}")


def decode_points(data: bytes, name: str, max_bytes: int = Limits.max_bytes) -> PointData:
    ext = suffix(name)
    buf = io.BytesIO(data)
    try:
        if ext == ".npy":
            return PointData(_xyz(np.load(buf, allow_pickle=False), name))
        if ext == ".npz":
            with np.load(buf, allow_pickle=False) as npz:
                for info in npz.zip.infolist():  # an .npz is a zip: its members are sized before inflating
                    check_size(info.file_size, max_bytes, f"{name}[{info.filename}]")
                return PointData(_first_array({k: npz[k] for k in npz.files}, name))
        if ext in (".h5", ".hdf5"):
            with h5py.File(buf, "r") as f:
                datasets = {k: f[k] for k in f.keys() if isinstance(f[k], h5py.Dataset)}
                for key, dataset in datasets.items():  # compressed datasets are sized before unpacking
                    check_size(dataset.nbytes, max_bytes, f"{name}[{key}]")
                arrays = {k: d[()] for k, d in datasets.items()}
            return PointData(_first_array(arrays, name))
        text = data.decode("utf-8", errors="strict").replace(",", " ")
        return PointData(_xyz(np.loadtxt(io.StringIO(text), ndmin=2), name))
    except ShapeError:
        raise
    except Exception as err:
        raise ShapeError("decode", f"{name}: {error_text(err)}") from None


def decode_mesh(data: bytes, name: str, container: Container | None = None, member: str = "") -> Geometry:
    """Decode a mesh file with the reader of its format; a file with vertices but no faces is a point cloud."""
    ext = suffix(name)
    if ext in (".gltf", ".glb"):
        return gltf.read(data, name, sibling_reader(container, member or name) if container is not None else None)
    return READERS[ext](data, name)


def decode_geometry(data: bytes, name: str, container: Container | None = None, member: str = "",
                    max_bytes: int = Limits.max_bytes) -> Geometry:
    """Dispatch on the file suffix: mesh formats to trimesh, point formats to numpy/h5py."""
    ext = suffix(name)
    if ext in POINT_SUFFIXES:
        return decode_points(data, name, max_bytes)
    if ext in MESH_SUFFIXES:
        return decode_mesh(data, name, container, member)
    raise ShapeError("decode", f"{name}: unsupported file type {ext or '(none)'}")
