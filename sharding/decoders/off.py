"""Object File Format (OFF, as Geomview and the Princeton Shape Benchmark define it): vertices, then polygons.

    [ST][C][N][4]OFF            keyword (ModelNet writes it glued to the counts: `OFF490 518 0`)
    nv nf ne                    counts (ne, the edge count, is ignored and may be missing)
    x y z [colour or normal]    nv vertex lines
    k i1 .. ik [colour]         nf polygon lines, 0-based, fan-triangulated

`#` starts a comment. Blank lines are skipped. The counts are checked against the lines that exist
before anything is allocated, so a header that claims 10^12 vertices fails at once. Binary OFF is
refused with a sentence.
"""

from __future__ import annotations

import io
import re

import numpy as np

from sharding.decoders.polygons import broken, fan_triangles, mesh_or_cloud
from sharding.decoders.text import ragged_take, tokens_per_line
from sharding.records import Geometry

_KEYWORD = re.compile(rb"\A\s*(?:ST)?C?N?4?n?OFF(?=[\s\d+-]|\Z)")
_COMMENT = re.compile(rb"#[^\n]*")


def read(data: bytes, name: str) -> Geometry:
    """The mesh (or vertex cloud) of one OFF file."""
    if not data.strip():
        raise broken(name, "it is empty")
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    if b"#" in data:
        data = _COMMENT.sub(b"", data)
    keyword = _KEYWORD.match(data)
    if keyword is None:
        raise broken(name, "it does not start with an OFF keyword")
    body = data[keyword.end():]
    if body.lstrip(b" \t")[:6] == b"BINARY":
        raise broken(name, "binary OFF is not supported")
    lines = [line for line in body.split(b"\n") if line.strip()]
    num_vertices, num_faces = _counts(lines, name)
    vertex_lines, face_lines = lines[1:1 + num_vertices], lines[1 + num_vertices:1 + num_vertices + num_faces]
    if len(vertex_lines) < num_vertices:
        raise broken(name, f"the header declares {num_vertices} vertices, the data holds {len(vertex_lines)}")
    if len(face_lines) < num_faces:
        raise broken(name, f"the header declares {num_faces} faces, the data holds {len(face_lines)}")
    vertices = _vertices(vertex_lines, name)
    faces = _faces(face_lines, num_vertices, name) if num_faces else np.empty((0, 3), dtype=np.int64)
    return mesh_or_cloud(name, vertices, faces)


def _counts(lines: list[bytes], name: str) -> tuple[int, int]:
    """(vertices, faces) from the counts line; each line of the file can hold at most one of either."""
    fields = lines[0].split() if lines else []
    if len(fields) < 2 or not all(f.isdigit() for f in fields[:3]):
        raise broken(name, "its counts line does not hold the vertex and face counts")
    num_vertices, num_faces = int(fields[0]), int(fields[1])
    if num_vertices + num_faces > len(lines) - 1:
        raise broken(name, f"the header declares {num_vertices} vertices and {num_faces} faces, more than "
                           f"the {len(lines) - 1} lines after it can hold")
    return num_vertices, num_faces


def _vertices(lines: list[bytes], name: str) -> np.ndarray:
    try:
        return np.loadtxt(io.BytesIO(b"\n".join(lines)), usecols=(0, 1, 2), ndmin=2, dtype=np.float64)
    except ValueError:
        short = next((i for i, line in enumerate(lines) if len(line.split()) < 3), None)
        if short is not None:
            raise broken(name, f"vertex {short + 1} has fewer than 3 coordinates") from None
        raise broken(name, "a vertex line holds a coordinate that is not a number") from None


def _faces(lines: list[bytes], num_vertices: int, name: str) -> np.ndarray:
    """(F, 3) triangles of the polygon lines: each line's corner count, its corners, then colour values."""
    block = b"\n".join(lines)
    integers = not any(c in block for c in (b".", b"e", b"E", b"n", b"N"))  # float colours are rare
    try:
        numbers = np.fromstring(block, dtype=np.int64 if integers else np.float64, sep=" ")
    except ValueError:
        raise broken(name, "a face line holds something that is not a number") from None
    tokens = tokens_per_line(block, len(lines))
    if len(numbers) != tokens.sum():
        raise broken(name, "a face line holds something that is not a number")
    starts = np.cumsum(tokens) - tokens
    corners = numbers[starts]
    short = np.flatnonzero((corners != np.round(corners)) | (corners < 3) | (tokens < corners + 1))
    if len(short):
        i = short[0]
        if corners[i] == np.round(corners[i]) and 0 <= corners[i] < 3:
            raise broken(name, f"face {i + 1} has {int(corners[i])} corners; a face needs at least 3")
        raise broken(name, f"face {i + 1} does not list the corners its count announces")
    corners = corners.astype(np.int64)
    indices = ragged_take(numbers, starts + 1, corners)
    bad = np.flatnonzero((indices != np.round(indices)) | (indices < 0) | (indices >= num_vertices))
    if len(bad):
        face = int(np.searchsorted(np.cumsum(corners), bad[0], side="right"))
        raise broken(name, f"face {face + 1} refers to a vertex that does not exist (the file has "
                           f"{num_vertices} vertices)")
    return fan_triangles(indices.astype(np.int64), corners)
