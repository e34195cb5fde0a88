"""Decode mesh and point-cloud files from bytes.

Meshes (.obj .off .ply .stl .glb .gltf) go through trimesh; scenes are flattened into one mesh with
their node transforms applied (as the reference does). Point clouds come from .npy/.npz (never with
pickles), text (.xyz .pts .txt), .h5/.hdf5, or a .ply / mesh file without faces. Materials and
textures are skipped: only geometry is sampled.
"""

from __future__ import annotations

import io
import posixpath

import h5py
import numpy as np
import trimesh

from sharding.containers import Container
from sharding.records import Geometry, MeshData, PointData, ShapeError

MESH_SUFFIXES = (".obj", ".off", ".ply", ".stl", ".glb", ".gltf")
POINT_SUFFIXES = (".npy", ".npz", ".xyz", ".pts", ".txt", ".h5", ".hdf5")
POINT_KEYS = ("points", "xyz", "data", "pos", "coords")


def suffix(name: str) -> str:
    return posixpath.splitext(name.lower())[1]


class ContainerResolver(trimesh.resolvers.Resolver):
    """Lets a .gltf or .obj find its sibling files (buffers) inside the same container."""

    def __init__(self, container: Container, member: str) -> None:
        self.container = container
        self.base = posixpath.dirname(member)

    def get(self, name: str) -> bytes:
        return self.container.read(posixpath.join(self.base, name))

    def write(self, name: str, data: bytes) -> None:
        raise PermissionError("containers are read-only")

    def namespaced(self, namespace: str) -> ContainerResolver:
        return ContainerResolver(self.container, posixpath.join(self.base, namespace, "_"))

    def keys(self):
        return iter(())


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


def decode_points(data: bytes, name: str) -> PointData:
    ext = suffix(name)
    buf = io.BytesIO(data)
    try:
        if ext == ".npy":
            return PointData(_xyz(np.load(buf, allow_pickle=False), name))
        if ext == ".npz":
            with np.load(buf, allow_pickle=False) as npz:
                return PointData(_first_array({k: npz[k] for k in npz.files}, name))
        if ext in (".h5", ".hdf5"):
            with h5py.File(buf, "r") as f:
                arrays = {k: f[k][()] for k in f.keys() if isinstance(f[k], h5py.Dataset)}
            return PointData(_first_array(arrays, name))
        text = data.decode("utf-8", errors="strict").replace(",", " ")
        return PointData(_xyz(np.loadtxt(io.StringIO(text), ndmin=2), name))
    except ShapeError:
        raise
    except Exception as err:
        raise ShapeError("decode", f"{name}: {type(err).__name__}: {err}") from None


def decode_mesh(data: bytes, name: str, container: Container | None = None, member: str = "") -> Geometry:
    """Decode a mesh file; a file with vertices but no faces becomes a point cloud."""
    ext = suffix(name)
    resolver = ContainerResolver(container, member or name) if container is not None else None
    try:
        loaded = trimesh.load(
            io.BytesIO(data), file_type=ext[1:], resolver=resolver, force="mesh", process=False, skip_materials=True
        )
    except Exception as err:
        raise ShapeError("decode", f"{name}: {type(err).__name__}: {err}") from None
    if isinstance(loaded, trimesh.PointCloud):
        return PointData(np.asarray(loaded.vertices, dtype=np.float64))
    if isinstance(loaded, list) or not hasattr(loaded, "vertices"):
        raise ShapeError("decode", f"{name}: no geometry")
    vertices = np.asarray(loaded.vertices, dtype=np.float64)
    faces = np.asarray(getattr(loaded, "faces", np.zeros((0, 3))), dtype=np.int64).reshape(-1, 3)
    if len(vertices) == 0:
        raise ShapeError("decode", f"{name}: empty mesh (no vertices)")
    if len(faces) == 0:
        return PointData(vertices)
    return MeshData(vertices, faces)


def decode_geometry(data: bytes, name: str, container: Container | None = None, member: str = "") -> Geometry:
    """Dispatch on the file suffix: mesh formats to trimesh, point formats to numpy/h5py."""
    ext = suffix(name)
    if ext in POINT_SUFFIXES:
        return decode_points(data, name)
    if ext in MESH_SUFFIXES:
        return decode_mesh(data, name, container, member)
    raise ShapeError("decode", f"{name}: unsupported file type {ext or '(none)'}")
