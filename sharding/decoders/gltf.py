"""glTF geometry (.gltf and .glb): every mesh instance of the default scene, in world coordinates.

glTF 1.0 documents are first rewritten in 2.0 form (sharding.decoders.gltf_v1).
The node tree of the default scene (or of scene 0) is walked with each node's `matrix` or TRS
transform (glTF 2.0 specification, 3.5); a file without scenes is a library of meshes, each taken once
as it is. Primitives in TRIANGLES, TRIANGLE_STRIP and TRIANGLE_FAN mode become triangles (3.7.2.1),
POINTS primitives a point cloud (used when the file holds no triangles), and lines, which have no
surface, are skipped. KHR_draco_mesh_compression primitives are decoded with DracoPy, whose `points`
are the compressed POSITION attribute. A required extension that changes geometry and is not read here
(EXT_meshopt_compression, say) is refused by name. Materials and textures are never read.
"""

from __future__ import annotations

from collections.abc import Callable

import DracoPy
import numpy as np

from sharding.decoders import gltf_v1
from sharding.decoders.gltf_buffers import Buffers, container
from sharding.decoders.polygons import broken
from sharding.records import Geometry, MeshData, PointData

DRACO = "KHR_draco_mesh_compression"
READ_EXTENSIONS = (DRACO, "KHR_mesh_quantization")
APPEARANCE_PREFIXES = ("KHR_materials_", "KHR_texture_", "EXT_texture_", "KHR_technique", "KHR_lights_", "KHR_xmp",
                       "EXT_lights_", "KHR_animation_pointer")  # required extensions that leave geometry alone
POINTS, LINES, LINE_LOOP, LINE_STRIP, TRIANGLES, TRIANGLE_STRIP, TRIANGLE_FAN = range(7)
MODE_NAMES = {LINES: "LINES", LINE_LOOP: "LINE_LOOP", LINE_STRIP: "LINE_STRIP"}
MAX_INSTANCES = 100_000  # mesh instances one node graph may expand to (instancing can grow exponentially)
MAX_VERTICES = 50_000_000  # summed over instances, before anything is concatenated


def read(data: bytes, name: str, resolve: Callable[[str], bytes] | None = None) -> Geometry:
    """The triangles (or, failing those, the points) of one glTF asset."""
    if not data.strip():
        raise broken(name, "it is empty")
    document, binary = container(data, name)
    try:
        if gltf_v1.is_v1(document):
            document = gltf_v1.upgrade(document)
        return _geometry(document, Buffers(document, binary, name, resolve), name)
    except (KeyError, IndexError, TypeError, ValueError, AttributeError):
        raise broken(name, "its glTF JSON is malformed (a field is missing or has the wrong type)") from None


def _geometry(document: dict, buffers: Buffers, name: str) -> Geometry:
    version = str(document.get("asset", {}).get("version", "")) if isinstance(document.get("asset"), dict) else ""
    if not version.startswith("2"):
        raise broken(name, f"glTF version {version or '(none)'} is not supported (only 1.x and 2.x)")
    unsupported = [e for e in document.get("extensionsRequired", [])
                   if e not in READ_EXTENSIONS and not str(e).startswith(APPEARANCE_PREFIXES)]
    if unsupported:
        raise broken(name, f"it requires the extension {unsupported[0]}, which is not supported")
    triangles: list[tuple[np.ndarray, np.ndarray]] = []
    points: list[np.ndarray] = []
    skipped: set[str] = set()
    total = 0
    for mesh_index, matrix in _instances(document, name):
        mesh = document["meshes"][mesh_index]
        for number, primitive in enumerate(mesh.get("primitives", [])):
            where = f"primitive {number} of mesh {mesh_index}"
            mode = primitive.get("mode", TRIANGLES)
            if mode in MODE_NAMES:
                skipped.add(MODE_NAMES[mode])
                continue
            vertices, faces = _primitive(primitive, mode, buffers, where, name)
            total += len(vertices)
            if total > MAX_VERTICES:
                raise broken(name, f"its scene expands to more than {MAX_VERTICES} vertices")
            with np.errstate(invalid="ignore", over="ignore"):  # non-finite data is reported when sampled
                vertices = vertices @ matrix[:3, :3].T + matrix[:3, 3]
            if mode == POINTS:
                points.append(vertices)
            else:
                triangles.append((vertices, faces))
    if triangles:
        offsets = np.cumsum([0] + [len(v) for v, _ in triangles[:-1]])
        return MeshData(np.concatenate([v for v, _ in triangles]),
                        np.concatenate([f + o for (_, f), o in zip(triangles, offsets)]))
    if points:
        return PointData(np.concatenate(points))
    if skipped:
        raise broken(name, f"it holds only {' and '.join(sorted(skipped))} primitives: lines have no surface to sample")
    raise broken(name, "its default scene holds no meshes" if document.get("meshes") else "it holds no meshes")


def _instances(document: dict, name: str) -> list[tuple[int, np.ndarray]]:
    """(mesh index, world matrix) of every mesh the default scene places; every mesh once without scenes."""
    meshes = document.get("meshes", [])
    if "scenes" not in document:
        return [(i, np.eye(4)) for i in range(len(meshes))]
    scene = document["scenes"][document.get("scene", 0)]
    nodes = document.get("nodes", [])
    found: list[tuple[int, np.ndarray]] = []
    stack = [(root, np.eye(4), frozenset()) for root in reversed(scene.get("nodes", []))]
    while stack:
        index, parent, path = stack.pop()
        if index in path:
            raise broken(name, f"node {index} is its own ancestor (the node graph has a cycle)")
        if not isinstance(index, int) or not 0 <= index < len(nodes):
            raise broken(name, f"it refers to node {index}, which does not exist")
        node = nodes[index]
        world = parent @ _local(node)
        if "mesh" in node:
            if not isinstance(node["mesh"], int) or not 0 <= node["mesh"] < len(meshes):
                raise broken(name, f"node {index} refers to mesh {node['mesh']}, which does not exist")
            found.append((node["mesh"], world))
            if len(found) > MAX_INSTANCES:
                raise broken(name, f"its scene places more than {MAX_INSTANCES} mesh instances")
        stack += [(child, world, path | {index}) for child in reversed(node.get("children", []))]
    return found


def _local(node: dict) -> np.ndarray:
    """A node's local transform: `matrix` (column-major) or translation * rotation * scale (3.5.2)."""
    if "matrix" in node:
        return np.asarray(node["matrix"], dtype=np.float64).reshape(4, 4).T
    x, y, z, w = node.get("rotation", (0.0, 0.0, 0.0, 1.0))
    rotation = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                         [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                         [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])
    local = np.eye(4)
    local[:3, :3] = rotation * np.asarray(node.get("scale", (1.0, 1.0, 1.0)), dtype=np.float64)
    local[:3, 3] = node.get("translation", (0.0, 0.0, 0.0))
    return local


def _primitive(primitive: dict, mode: int, buffers: Buffers, where: str, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(vertices, triangles) of one primitive; no triangles for POINTS."""
    draco = primitive.get("extensions", {}).get(DRACO)
    if draco is not None:
        return _draco(draco, mode, buffers, where, name)
    if "POSITION" not in primitive.get("attributes", {}):
        raise broken(name, f"{where} has no POSITION attribute")
    vertices = buffers.accessor(primitive["attributes"]["POSITION"])
    if vertices.shape[1] != 3:
        raise broken(name, f"{where} has positions that are not 3D vectors")
    if "indices" in primitive:
        indices = buffers.accessor(primitive["indices"]).reshape(-1)
    else:
        indices = np.arange(len(vertices), dtype=np.int64)
    if mode == POINTS:
        return vertices[_checked(indices, len(vertices), where, name)], np.empty((0, 3), dtype=np.int64)
    return vertices.astype(np.float64), _checked(_triangles(indices, mode, where, name), len(vertices), where, name)


def _draco(draco: dict, mode: int, buffers: Buffers, where: str, name: str) -> tuple[np.ndarray, np.ndarray]:
    data, start, length, _ = buffers.view(draco.get("bufferView"))
    try:
        decoded = DracoPy.decode(bytes(data[start:start + length]))
    except Exception:  # DracoPy raises its own failure types for corrupt streams
        raise broken(name, f"{where} holds Draco data that does not decode") from None
    vertices = np.asarray(decoded.points, dtype=np.float64).reshape(-1, 3)
    faces = np.asarray(getattr(decoded, "faces", np.empty((0, 3))), dtype=np.int64).reshape(-1, 3)
    if mode == POINTS or len(faces) == 0:
        return vertices, np.empty((0, 3), dtype=np.int64) if mode == POINTS else faces
    return vertices, _checked(faces, len(vertices), where, name)


def _triangles(indices: np.ndarray, mode: int, where: str, name: str) -> np.ndarray:
    """Triangles of a TRIANGLES, TRIANGLE_STRIP or TRIANGLE_FAN index sequence (3.7.2.1)."""
    if mode == TRIANGLES:
        if len(indices) % 3:
            raise broken(name, f"{where} has {len(indices)} triangle indices, not a multiple of 3")
        return indices.reshape(-1, 3)
    n = len(indices) - 2
    if n < 1:
        return np.empty((0, 3), dtype=np.int64)
    i = np.arange(n)
    if mode == TRIANGLE_STRIP:  # every other triangle is reversed to keep one winding
        even = i % 2 == 0
        return np.stack([indices[np.where(even, i, i + 1)], indices[np.where(even, i + 1, i)], indices[i + 2]], axis=1)
    if mode == TRIANGLE_FAN:
        return np.stack([np.full(n, indices[0]), indices[i + 1], indices[i + 2]], axis=1)
    raise broken(name, f"{where} has mode {mode}, which glTF 2.0 does not define")


def _checked(indices: np.ndarray, num_vertices: int, where: str, name: str) -> np.ndarray:
    if len(indices) and (indices.min() < 0 or indices.max() >= num_vertices):
        raise broken(name, f"{where} refers to vertex {int(indices.max())}, past its {num_vertices} vertices")
    return indices
