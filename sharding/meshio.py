"""Decode mesh and point-cloud files from bytes.

Meshes (.obj .off .ply .stl .glb .gltf) go through trimesh; scenes are flattened into one mesh with
their node transforms applied (as the reference does). Point clouds come from .npy/.npz (never with
pickles), text (.xyz .pts .txt), .h5/.hdf5, or a .ply / mesh file without faces. Materials and
textures are skipped: only geometry is sampled.

A mesh must hold the vertex and face counts its PLY or OFF header declares (sharding.headers), and
arrays packed in an .npz or HDF5 file are held to `max_bytes` before they are unpacked. Errors name
the file but never quote its content (see records.error_text).
"""

from __future__ import annotations

import io
import posixpath

import h5py
import numpy as np
import trimesh

from sharding.containers import Container
from sharding.decoders import obj, off, ply, stl
from sharding.headers import declared_counts
from sharding.limits import Limits, check_size
from sharding.records import Geometry, MeshData, PointData, ShapeError, error_text

MESH_SUFFIXES = (".obj", ".off", ".ply", ".stl", ".glb", ".gltf")
POINT_SUFFIXES = (".npy", ".npz", ".xyz", ".pts", ".txt", ".h5", ".hdf5")
POINT_KEYS = ("points", "xyz", "data", "pos", "coords")
READERS = {".obj": obj.read, ".off": off.read, ".ply": ply.read, ".stl": stl.read}  # the project's own readers (BENCHMARKS.md: mesh decoders)


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
    """Decode a mesh file; a file with vertices but no faces becomes a point cloud."""
    ext = suffix(name)
    if ext in READERS:
        return READERS[ext](data, name)
    resolver = ContainerResolver(container, member or name) if container is not None else None
    try:
        scene = trimesh.load_scene(
            io.BytesIO(data), file_type=ext[1:], resolver=resolver, process=False, skip_materials=True
        )
        mesh = scene.to_mesh()
        clouds = []
        if len(mesh.faces) == 0:  # a file of vertices only loads as a point cloud, which to_mesh() leaves out
            clouds = [g.vertices for g in scene.dump() if isinstance(g, trimesh.PointCloud)]
    except Exception as err:
        raise ShapeError("decode", f"{name}: {error_text(err)}") from None
    vertices = np.asarray(np.concatenate(clouds) if clouds else mesh.vertices, dtype=np.float64).reshape(-1, 3)
    faces = np.asarray(mesh.faces, dtype=np.int64).reshape(-1, 3)
    declared = declared_counts(data, ext)
    if declared is not None:
        _check_counts(name, declared, len(vertices), len(faces))
    if len(vertices) == 0:
        raise ShapeError("decode", f"{name}: empty mesh (no vertices)")
    if len(faces) == 0:
        return PointData(vertices)
    return MeshData(vertices, faces)


def _check_counts(name: str, declared: tuple[int, int], vertices: int, faces: int) -> None:
    """The header's vertex count exactly; at least its face count (polygons become one or more triangles)."""
    want_vertices, want_faces = declared
    if vertices != want_vertices:
        raise ShapeError("decode", f"{name}: the header declares {want_vertices} vertices, the data holds "
                                   f"{vertices}")
    if faces < want_faces:
        raise ShapeError("decode", f"{name}: the header declares {want_faces} faces, the data holds {faces}")


def decode_geometry(data: bytes, name: str, container: Container | None = None, member: str = "",
                    max_bytes: int = Limits.max_bytes) -> Geometry:
    """Dispatch on the file suffix: mesh formats to trimesh, point formats to numpy/h5py."""
    ext = suffix(name)
    if ext in POINT_SUFFIXES:
        return decode_points(data, name, max_bytes)
    if ext in MESH_SUFFIXES:
        return decode_mesh(data, name, container, member)
    raise ShapeError("decode", f"{name}: unsupported file type {ext or '(none)'}")
