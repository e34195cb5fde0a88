"""Wavefront OBJ geometry: `v` lines become vertices, `f` lines fan-triangulated faces, nothing else is read.

OBJ is the format of ShapeNet, 3D-FUTURE, Toys4K and GSO, and parsing it dominated sharding time under
trimesh, so this reader is vectorised: lines are sorted by keyword in numpy, vertex lines go to
numpy's C text parser, and face lines are parsed as one block of integers once their `/vt/vn` parts
are known to have one layout (the common case; mixed layouts take a per-line path). Materials,
texture coordinates, normals, groups, lines (`l`) and points (`p`) are skipped: only the surface is
sampled. A file with `v` lines and no faces is a point cloud. Indices follow the OBJ specification
(Wavefront, "Object Files (.obj)"): 1-based, negative ones count back from the latest vertex.
"""

from __future__ import annotations

import io

import numpy as np

from sharding.decoders.polygons import broken, fan_triangles, mesh_or_cloud
from sharding.decoders.text import tokens_per_line
from sharding.records import Geometry

_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_SLASH_TO_SPACE = bytes.maketrans(b"/f", b"  ")  # the block holds only face lines: 'f' is the keyword
_INDENT = np.zeros(256, dtype=bool)
_INDENT[[9, 11, 12, 32]] = True
_VERTEX, _FACE = 1, 2


def read(data: bytes, name: str) -> Geometry:
    """The mesh (or vertex cloud) of one OBJ file."""
    if data.startswith(_UTF16_BOMS):
        try:
            data = data.decode("utf-16").encode("utf-8")
        except UnicodeDecodeError:
            raise broken(name, "it starts like UTF-16 text but does not decode as UTF-16") from None
    if b"\\\n" in data or b"\\\r\n" in data:  # a trailing backslash continues the line
        data = data.replace(b"\\\r\n", b" ").replace(b"\\\n", b" ")
    vertex_block, num_vertices, face_block, vertices_before = _sort_lines(data)
    if not num_vertices:
        raise broken(name, "it holds no vertices ('v' lines)" if data.strip() else "it is empty")
    vertices = _vertices(vertex_block, num_vertices, name)
    faces = _faces(face_block, vertices_before, len(vertices), name)
    return mesh_or_cloud(name, vertices, faces)


def _sort_lines(data: bytes) -> tuple[bytes, int, bytes, list[int] | np.ndarray]:
    """The `v` lines as one block and their count, the `f` lines as one block, and for each face line
    the number of vertices defined before it.

    Lines are classified by their first two bytes in numpy, and runs of lines of one kind are cut out of
    the file as whole slices, so the cost is a few passes over the bytes plus one join per run.
    """
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    raw = np.frombuffer(data, dtype=np.uint8)
    ends = np.flatnonzero(raw == 10)
    starts = np.concatenate(([0], ends + 1))
    ends = np.concatenate((ends, [len(raw)]))
    padded = np.concatenate((raw, [10, 10]))  # a last line of one byte still has a second byte to read
    first, second = padded[starts], padded[starts + 1]
    if _INDENT[first].any():  # indented lines: classify line by line
        return _sort_indented(data)
    separated = (second == 32) | (second == 9)
    kind = np.where(separated & (first == ord("v")), _VERTEX, np.where(separated & (first == ord("f")), _FACE, 0))
    is_vertex = kind == _VERTEX
    vertices_before = np.cumsum(is_vertex)[kind == _FACE]
    return (_runs(data, kind, starts, ends, _VERTEX), int(is_vertex.sum()), _runs(data, kind, starts, ends, _FACE),
            vertices_before)


def _runs(data: bytes, kind: np.ndarray, starts: np.ndarray, ends: np.ndarray, wanted: int) -> bytes:
    """The lines of one kind, joined by newlines: each run of consecutive such lines is one slice."""
    mask = np.concatenate(([False], kind == wanted, [False]))
    edges = np.flatnonzero(mask[1:] != mask[:-1])
    return b"\n".join(data[starts[a]:ends[b - 1]] for a, b in zip(edges[::2], edges[1::2]))


def _sort_indented(data: bytes) -> tuple[bytes, int, bytes, list[int]]:
    """`_sort_lines` for files whose lines may start with whitespace, one line at a time."""
    vertex_lines: list[bytes] = []
    face_lines: list[bytes] = []
    vertices_before: list[int] = []
    for line in data.splitlines():
        line = line.lstrip()
        head = line[:2]
        if head == b"v " or head == b"v\t":
            vertex_lines.append(line)
        elif head == b"f " or head == b"f\t":
            face_lines.append(line)
            vertices_before.append(len(vertex_lines))
    return b"\n".join(vertex_lines), len(vertex_lines), b"\n".join(face_lines), vertices_before


def _vertices(block: bytes, count: int, name: str) -> np.ndarray:
    """(V, 3) float64 from `v x y z [w | r g b]` lines; a line with fewer than 3 numbers is an error."""
    try:
        vertices = np.loadtxt(io.BytesIO(block), usecols=(1, 2, 3), ndmin=2, dtype=np.float64)
        if len(vertices) == count:
            return vertices
    except ValueError:
        pass
    lines = block.split(b"\n")
    short = next((i for i, line in enumerate(lines) if len(line.split(b"#", 1)[0].split()) < 4), None)
    if short is not None:
        raise broken(name, f"vertex {short + 1} has fewer than 3 coordinates")
    raise broken(name, "a vertex line holds a coordinate that is not a number")


def _faces(block: bytes, vertices_before: list[int] | np.ndarray, num_vertices: int, name: str) -> np.ndarray:
    """(F, 3) zero-based triangles of the face lines, checked against the vertices that exist."""
    if not block:
        return np.empty((0, 3), dtype=np.int64)
    parsed = _uniform_faces(block, len(vertices_before)) if b"#" not in block else None
    indices, corners = parsed if parsed is not None else _faces_by_line(block.split(b"\n"), name)
    few = np.flatnonzero(corners < 3)
    if len(few):
        raise broken(name, f"face {few[0] + 1} has {corners[few[0]]} corners; a face needs at least 3")
    zero = np.flatnonzero(indices == 0)
    if len(zero):
        face = int(np.searchsorted(np.cumsum(corners), zero[0], side="right"))
        raise broken(name, f"face {face + 1} refers to vertex 0; OBJ vertex indices start at 1")
    relative = indices < 0
    indices = indices - 1
    if relative.any():  # -1 is the latest vertex defined before the face's own line
        before = np.repeat(np.asarray(vertices_before, dtype=np.int64), corners)
        indices[relative] += before[relative] + 1
    bad = np.flatnonzero((indices < 0) | (indices >= num_vertices))
    if len(bad):
        face = int(np.searchsorted(np.cumsum(corners), bad[0], side="right"))
        raise broken(name, f"face {face + 1} refers to a vertex that does not exist (the file has "
                           f"{num_vertices} vertices)")
    return fan_triangles(indices, corners)


def _uniform_faces(block: bytes, num_lines: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Vertex indices and corner counts when every corner has the same `v`, `v/t`, `v//n` or `v/t/n` form.

    Corners are counted as whitespace-separated groups per line (the keyword excluded); the slashes tell
    how many integers each corner holds. None when the forms are mixed or the integers do not add up.
    """
    corners = tokens_per_line(block, num_lines) - 1  # the keyword is a token
    total = int(corners.sum())
    slashes, empty = block.count(b"/"), block.count(b"//")
    per_corner = {(0, 0): 1, (total, 0): 2, (2 * total, total): 2, (2 * total, 0): 3}.get((slashes, empty))
    if per_corner is None:
        return None
    try:
        numbers = np.fromstring(block.translate(_SLASH_TO_SPACE), dtype=np.int64, sep=" ")
    except ValueError:
        return None
    if len(numbers) != total * per_corner:
        return None
    return numbers[::per_corner], corners


def _faces_by_line(lines: list[bytes], name: str) -> tuple[np.ndarray, np.ndarray]:
    """The general path: each corner's first integer, line by line (comments and mixed corner forms)."""
    indices: list[int] = []
    corners = np.empty(len(lines), dtype=np.int64)
    for i, line in enumerate(lines):
        tokens = line.split(b"#", 1)[0].split()[1:]
        try:
            indices.extend(int(token.split(b"/", 1)[0]) for token in tokens)
        except ValueError:
            raise broken(name, f"face {i + 1} has a corner that is not a vertex index") from None
        corners[i] = len(tokens)
    return np.asarray(indices, dtype=np.int64), corners
