"""glTF geometry (.gltf and .glb): every mesh instance of the default scene, in world coordinates.

glTF 1.0 documents are first rewritten in 2.0 form (sharding.decoders.gltf_v1). The node tree of the
default scene (or of scene 0) is walked with each node's `matrix` or TRS transform (Khronos glTF 2.0
specification, 3.5.2 and 3.5.3); a file without scenes is a library of meshes, each taken once as it is.
Primitives in TRIANGLES, TRIANGLE_STRIP and TRIANGLE_FAN mode become triangles (3.7.2.1), POINTS
primitives a point cloud (used when the file holds no triangles), and lines, which have no surface, are
skipped. KHR_draco_mesh_compression primitives are decoded with DracoPy. A required extension that
changes geometry and is not read here (EXT_meshopt_compression, say) is refused by name. Materials and
textures are never read. Node instances, mesh instances and vertices are capped, so a small file whose
node graph shares children cannot expand without bound.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import DracoPy
import numpy as np

from sharding.decoders import gltf_v1
from sharding.decoders.gltf_buffers import Buffers, container, is_index
from sharding.decoders.polygons import broken
from sharding.records import Geometry, MeshData, PointData, ShapeError

DRACO = "KHR_draco_mesh_compression"
READ_EXTENSIONS = (DRACO, "KHR_mesh_quantization")
APPEARANCE_PREFIXES = (  # required extensions that leave geometry alone
    "KHR_materials_", "KHR_texture_", "EXT_texture_", "KHR_technique", "KHR_lights_", "KHR_xmp",
    "EXT_lights_", "KHR_animation_pointer")
EXTENSION_NAME = re.compile(r"[A-Za-z0-9_]{1,64}")  # only a name of this form is repeated in a sentence
POINTS, LINES, LINE_LOOP, LINE_STRIP, TRIANGLES, TRIANGLE_STRIP, TRIANGLE_FAN = range(7)
LINE_MODES = {LINES: "LINES", LINE_LOOP: "LINE_LOOP", LINE_STRIP: "LINE_STRIP"}
MAX_VISITS = 1_000_000  # node instances one scene may expand to (shared children grow exponentially)
MAX_INSTANCES = 100_000  # mesh instances among them
MAX_VERTICES = 50_000_000  # summed over instances, before anything is concatenated
IDENTITY = np.eye(4)
TRANSFORM_KEYS = frozenset(("matrix", "translation", "rotation", "scale"))
NO_FACES = np.empty((0, 3), dtype=np.int64)
Part = tuple[int, np.ndarray, np.ndarray]  # (mode, float64 vertices, int64 triangles) of one primitive


def read(data: bytes, name: str, resolve: Callable[[str], bytes] | None = None) -> Geometry:
    """The triangles (or, failing those, the points) of one glTF asset; `resolve(uri)` reads the files
    a .gltf refers to, relative to it."""
    if not data or data.isspace():
        raise broken(name, "it is empty")
    try:
        document, binary = container(data, name)
        if gltf_v1.is_v1(document):
            document = gltf_v1.upgrade(document)
        return _geometry(document, Buffers(document, binary, name, resolve), name)
    except ShapeError:
        raise
    except (KeyError, IndexError, TypeError, ValueError, AttributeError, OverflowError):
        raise broken(name, "its glTF JSON is malformed (a field is missing or has the wrong type)") from None
    except MemoryError:
        raise broken(name, "decoding it needs more memory than there is") from None


def _geometry(document: dict, buffers: Buffers, name: str) -> Geometry:
    _check_version_and_extensions(document, name)
    meshes = document.get("meshes", [])
    if not isinstance(meshes, list):
        raise broken(name, "its meshes are not a list")
    parts: dict[int, list[Part]] = {}  # each mesh is read once, however many nodes place it
    triangles: list[tuple[np.ndarray, np.ndarray]] = []
    points: list[np.ndarray] = []
    skipped: set[str] = set()
    total = 0
    instances = _instances(document, len(meshes), name)
    for mesh_index, matrix in instances:
        if mesh_index not in parts:
            parts[mesh_index] = _mesh(meshes[mesh_index], mesh_index, buffers, skipped, name)
        for mode, vertices, faces in parts[mesh_index]:
            total += len(vertices)
            if total > MAX_VERTICES:
                raise broken(name, f"its scene expands to more than {MAX_VERTICES} vertices")
            if mode == POINTS:
                points.append(_placed(vertices, matrix))
            else:
                triangles.append((_placed(vertices, matrix), faces))
    if triangles:
        offsets = np.cumsum([0] + [len(v) for v, _ in triangles[:-1]])
        faces = [f + offset for (_, f), offset in zip(triangles, offsets)]
        return MeshData(_joined([v for v, _ in triangles]), _joined(faces))
    if points:
        return PointData(_joined(points))
    if skipped:
        modes = " and ".join(sorted(skipped))
        raise broken(name, f"it holds only {modes} primitives: lines have no surface to sample")
    if instances:
        raise broken(name, "its meshes hold no triangles and no points")
    raise broken(name, "its default scene holds no meshes" if meshes else "it holds no meshes")


def _check_version_and_extensions(document: dict, name: str) -> None:
    """2.x assets only (1.0 ones arrive rewritten; 2.4); a required extension must be one that is read or
    one that only changes appearance (3.12: `extensionsRequired` lists those needed to load the asset)."""
    asset = document.get("asset")
    version = asset.get("version") if isinstance(asset, dict) else None
    if not isinstance(version, str) or not version.startswith("2"):
        shown = (version if isinstance(version, str) and re.fullmatch(r"[0-9.]{1,16}", version)
                 else "(missing)" if version is None else "(not a version number)")
        raise broken(name, f"glTF version {shown} is not supported (only 1.x and 2.x)")
    required = document.get("extensionsRequired", [])
    if not isinstance(required, list) or not all(isinstance(e, str) for e in required):
        raise broken(name, "its extensionsRequired is not a list of names")
    for extension in required:
        if extension not in READ_EXTENSIONS and not extension.startswith(APPEARANCE_PREFIXES):
            shown = extension if EXTENSION_NAME.fullmatch(extension) else "with a malformed name"
            raise broken(name, f"it requires the extension {shown}, which is not supported")


def _instances(document: dict, mesh_count: int, name: str) -> list[tuple[int, np.ndarray]]:
    """(mesh index, world matrix) of every mesh the default scene places; every mesh once without scenes.

    Depth first with an explicit stack; `on_path` holds the ancestors of the node being entered, so a node
    met again below itself is a cycle (3.5.2: the hierarchy must be a set of disjoint trees), while a node
    reached from two parents is placed twice.
    """
    scenes = document.get("scenes")
    if not scenes:  # absent or empty: a library of meshes
        return [(i, IDENTITY) for i in range(mesh_count)]
    nodes = document.get("nodes", [])
    if not isinstance(scenes, list) or not isinstance(nodes, list):
        raise broken(name, "its scenes or nodes are not a list")
    scene = document.get("scene", 0)
    if not is_index(scene, len(scenes)):
        raise broken(name, "its default scene is not the index of one of its scenes")
    roots = _indices(scenes[scene].get("nodes", []) if isinstance(scenes[scene], dict) else None, nodes,
                     f"scene {scene}", name)
    stack: list[tuple[int, np.ndarray | None]] = [(root, IDENTITY) for root in reversed(roots)]
    on_path: set[int] = set()
    found: list[tuple[int, np.ndarray]] = []
    visits = 0
    while stack:
        index, parent = stack.pop()
        if parent is None:  # every node below `index` is done
            on_path.discard(index)
            continue
        if index in on_path:
            raise broken(name, f"node {index} is its own ancestor (the node graph has a cycle)")
        visits += 1
        if visits > MAX_VISITS:
            raise broken(name, f"its scene expands to more than {MAX_VISITS} node instances")
        node = nodes[index]
        if not isinstance(node, dict):
            raise broken(name, f"node {index} is not a JSON object")
        world = parent if TRANSFORM_KEYS.isdisjoint(node) else parent @ _local(node, index, name)
        if "mesh" in node:
            if not is_index(node["mesh"], mesh_count):
                raise broken(name, f"node {index} refers to a mesh that does not exist")
            found.append((node["mesh"], world))
            if len(found) > MAX_INSTANCES:
                raise broken(name, f"its scene places more than {MAX_INSTANCES} mesh instances")
        on_path.add(index)
        stack.append((index, None))
        children = _indices(node.get("children", []), nodes, f"node {index}", name)
        stack += [(child, world) for child in reversed(children)]
    return found


def _indices(values: object, nodes: list, owner: str, name: str) -> list[int]:
    """The node indices a scene or node lists, each checked to name a node."""
    if not isinstance(values, list):
        raise broken(name, f"{owner} has a node list that is not a list")
    for value in values:
        if not is_index(value, len(nodes)):
            raise broken(name, f"{owner} refers to a node that does not exist")
    return values


def _local(node: dict, index: int, name: str) -> np.ndarray:
    """A node's local transform: `matrix` (column-major) or translation * rotation * scale (3.5.3)."""
    if "matrix" in node:
        return _numbers(node, "matrix", 16, index, name).reshape(4, 4).T
    x, y, z, w = _numbers(node, "rotation", 4, index, name)
    rotation = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                         [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                         [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])
    local = np.eye(4)
    local[:3, :3] = rotation * _numbers(node, "scale", 3, index, name)
    local[:3, 3] = _numbers(node, "translation", 3, index, name)
    return local


def _numbers(node: dict, key: str, size: int, index: int, name: str) -> np.ndarray:
    default = {"rotation": (0.0, 0.0, 0.0, 1.0), "scale": (1.0, 1.0, 1.0), "translation": (0.0, 0.0, 0.0)}
    value = node.get(key, default.get(key))
    if not isinstance(value, list | tuple) or len(value) != size \
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
        raise broken(name, f"node {index} has a {key} that is not {size} numbers")
    return np.array(value, dtype=np.float64)


def _placed(vertices: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Vertices moved by a world matrix, term by term rather than through BLAS: the same bits on every machine
    and thread count, and no thread start-up for a (V, 3) by (3, 3) product."""
    if (matrix == IDENTITY).all():
        return vertices
    with np.errstate(invalid="ignore", over="ignore"):  # non-finite data is reported when sampled
        return (vertices[:, 0:1] * matrix[:3, 0] + vertices[:, 1:2] * matrix[:3, 1]
                + vertices[:, 2:3] * matrix[:3, 2] + matrix[:3, 3])


def _joined(arrays: list[np.ndarray]) -> np.ndarray:
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)


def _mesh(mesh: object, mesh_index: int, buffers: Buffers, skipped: set[str], name: str) -> list[Part]:
    """The point primitives and the primitives with triangles of one mesh; the names of its line modes go to
    `skipped`."""
    primitives = mesh.get("primitives") if isinstance(mesh, dict) else None
    if not isinstance(primitives, list):
        raise broken(name, f"mesh {mesh_index} has no list of primitives")
    parts = []
    for number, primitive in enumerate(primitives):
        where = f"primitive {number} of mesh {mesh_index}"
        if not isinstance(primitive, dict):
            raise broken(name, f"{where} is not a JSON object")
        mode = primitive.get("mode", TRIANGLES)
        if not is_index(mode, TRIANGLE_FAN + 1):
            raise broken(name, f"{where} has a mode that glTF 2.0 does not define")
        if mode in LINE_MODES:
            skipped.add(LINE_MODES[mode])
            continue
        extensions = primitive.get("extensions", {})
        if not isinstance(extensions, dict):
            raise broken(name, f"{where} has extensions that are not a JSON object")
        draco = extensions.get(DRACO)
        if draco is not None:
            vertices, faces = _draco(draco, buffers, where, name)
        else:
            vertices, faces = _plain(primitive, mode, buffers, where, name)
        if mode == POINTS:
            parts.append((mode, vertices, NO_FACES))
        elif len(faces):  # a strip of two indices, say, has no surface
            parts.append((mode, vertices, faces))
    return parts


def _plain(primitive: dict, mode: int, buffers: Buffers, where: str, name: str) -> tuple[np.ndarray, ...]:
    """(vertices, triangles) of a primitive stored in accessors; for POINTS, the indexed vertices and no
    triangles."""
    attributes = primitive.get("attributes")
    if not isinstance(attributes, dict) or "POSITION" not in attributes:
        raise broken(name, f"{where} has no POSITION attribute")
    vertices = buffers.accessor(attributes["POSITION"])
    if vertices.shape[1] != 3:
        raise broken(name, f"{where} has positions that are not 3D vectors")
    vertices = vertices.astype(np.float64, copy=False)  # integer positions (KHR_mesh_quantization) included
    if "indices" not in primitive:
        indices = np.arange(len(vertices), dtype=np.int64)
    else:
        indices = buffers.accessor(primitive["indices"])
        if indices.dtype != np.int64 or indices.shape[1] != 1:  # the schema asks for unsigned integer scalars
            raise broken(name, f"{where} has indices that are not integer scalars")
        indices = _checked(indices.reshape(-1), len(vertices), where, name)
    if mode == POINTS:
        return vertices[indices], NO_FACES
    return vertices, _triangles(indices, mode, where, name)


def _draco(draco: object, buffers: Buffers, where: str, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(vertices, triangles) of a KHR_draco_mesh_compression primitive; a Draco point cloud has no triangles.

    The extension maps POSITION to the unique id of a Draco attribute, and that attribute is read (DracoPy's
    `points` is the first attribute of Draco type POSITION, the same one unless a stream holds two). Draco
    streams keep only triangles and points, whatever the primitive's mode says of strips or fans.
    """
    attributes = draco.get("attributes") if isinstance(draco, dict) else None
    position = attributes.get("POSITION") if isinstance(attributes, dict) else None
    if type(position) is not int:
        raise broken(name, f"{where} has no POSITION attribute in its Draco extension")
    data, start, length, _ = buffers.view(draco.get("bufferView"))
    try:
        decoded = DracoPy.decode(bytes(data[start:start + length]))
    except Exception:  # noqa: BLE001 (DracoPy raises its own failure types for corrupt streams)
        raise broken(name, f"{where} holds Draco data that does not decode") from None
    attribute = decoded.get_attribute_by_unique_id(position)
    vertices = np.asarray(attribute["data"] if attribute else (), dtype=np.float64)
    if vertices.ndim != 2 or vertices.shape[1] != 3:
        raise broken(name, f"{where} has no 3D Draco POSITION attribute with the id its extension names")
    faces = np.asarray(getattr(decoded, "faces", ()), dtype=np.int64).reshape(-1, 3)
    return vertices, _checked(faces, len(vertices), where, name)


def _triangles(indices: np.ndarray, mode: int, where: str, name: str) -> np.ndarray:
    """Triangles of a TRIANGLES, TRIANGLE_STRIP or TRIANGLE_FAN index sequence, with the corner order of the
    topology equations (3.7.2.1), which keeps one winding along a strip."""
    if mode == TRIANGLES:
        if len(indices) % 3:
            raise broken(name, f"{where} has {len(indices)} triangle indices, not a multiple of 3")
        return indices.reshape(-1, 3)
    n = len(indices) - 2
    if n < 1:
        return NO_FACES
    i = np.arange(n)
    if mode == TRIANGLE_STRIP:  # p_i = {v_i, v_(i + 1 + i % 2), v_(i + 2 - i % 2)}
        return np.stack([indices[i], indices[i + 1 + i % 2], indices[i + 2 - i % 2]], axis=1)
    return np.stack([indices[i + 1], indices[i + 2], np.full(n, indices[0])], axis=1)  # {v_i+1, v_i+2, v_0}


def _checked(indices: np.ndarray, num_vertices: int, where: str, name: str) -> np.ndarray:
    """`indices`, once each is known to name one of the primitive's vertices."""
    if len(indices):
        low, high = int(indices.min()), int(indices.max())
        if low < 0:
            raise broken(name, f"{where} refers to vertex {low}: vertex indices start at 0")
        if high >= num_vertices:
            raise broken(name, f"{where} refers to vertex {high}, past its {num_vertices} vertices")
    return indices
