"""Object File Format (OFF, as Geomview and the Princeton Shape Benchmark define it): vertices, then polygons.

    [ST][C][N]OFF               keyword (ModelNet writes it glued to the counts: `OFF490 518 0`)
    nv nf ne                    counts, on the keyword's line or the next (ne, the edge count, is ignored)
    x y z [normal colour uv]    nv vertex lines
    k i1 .. ik [colour]         nf polygon lines, 0-based, fan-triangulated

`#` starts a comment. Blank lines are skipped. The counts are checked against the lines that exist
before anything is allocated, so a header that claims 10^12 vertices fails at once. Binary OFF and
Geomview's 4OFF (homogeneous coordinates) and nOFF (any dimension) are refused with a sentence.
"""

from __future__ import annotations

import io
import re

import numpy as np

from sharding.decoders.polygons import broken, fan_triangles, mesh_or_cloud, read_or_sentence
from sharding.decoders.text import nonblank_lines, ragged_take
from sharding.records import Geometry

_KEYWORD = re.compile(rb"\A\s*(?:ST)?C?N?(4?n?)OFF(?=[\s\d+-]|\Z)")
_BINARY = re.compile(rb"[ \t]*BINARY")
_COMMENT = re.compile(rb"#[^\n]*")
_NOT_INTEGER = (b".", b"e", b"E", b"n", b"N", b"i", b"I")  # a decimal point, an exponent, nan or inf


def read(data: bytes, name: str) -> Geometry:
    """The mesh (or vertex cloud) of one OFF file."""
    return read_or_sentence(_read, data, name, "OFF")


def _read(data: bytes, name: str) -> Geometry:
    if not data or data.isspace():
        raise broken(name, "it is empty")
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    if b"#" in data:
        data = _COMMENT.sub(b"", data)
    keyword = _KEYWORD.match(data)
    if keyword is None:
        raise broken(name, "it does not start with an OFF keyword")
    if keyword.group(1):
        raise broken(name, "4OFF and nOFF files (vertices that are not 3D points) are not supported")
    if _BINARY.match(data, keyword.end()):
        raise broken(name, "binary OFF is not supported")
    body = data[keyword.end():]
    starts, ends, tokens = nonblank_lines(body)
    num_vertices, num_faces = _counts(body, starts, ends, name)
    vertices, faces = np.empty((0, 3)), np.empty((0, 3), dtype=np.int64)
    if num_vertices:  # lines 1..nv after the counts line
        vertices = _vertices(body[starts[1]:ends[num_vertices]], tokens[1:num_vertices + 1], name)
    if num_faces:  # the nf lines after those
        first, last = num_vertices + 1, num_vertices + num_faces
        faces = _faces(body[starts[first]:ends[last]], tokens[first:last + 1], num_vertices, name)
    return mesh_or_cloud(name, vertices, faces)


def _counts(body: bytes, starts: np.ndarray, ends: np.ndarray, name: str) -> tuple[int, int]:
    """(vertices, faces) from the counts line; each line after it can hold at most one of either."""
    fields = body[starts[0]:ends[0]].split() if len(starts) else []
    if len(fields) < 2 or not all(f.isdigit() for f in fields[:3]):
        raise broken(name, "its counts line does not hold the vertex and face counts")
    num_vertices, num_faces = int(fields[0]), int(fields[1])
    if num_vertices + num_faces > len(starts) - 1:
        raise broken(name, f"the header declares {num_vertices} vertices and {num_faces} faces, more than "
                           f"the {len(starts) - 1} lines after it can hold")
    return num_vertices, num_faces


def _vertices(block: bytes, tokens: np.ndarray, name: str) -> np.ndarray:
    """x, y, z of each vertex line; what follows them (normal, colour, texture coordinates) is skipped."""
    short = np.flatnonzero(tokens < 3)
    if len(short):
        raise broken(name, f"vertex {short[0] + 1} has fewer than 3 coordinates")
    try:  # numpy's text reader converts only the columns asked for
        return np.loadtxt(io.BytesIO(block), usecols=(0, 1, 2), ndmin=2, dtype=np.float64, comments=None)
    except ValueError:
        raise broken(name, "a vertex line holds a coordinate that is not a number") from None


def _faces(block: bytes, tokens: np.ndarray, num_vertices: int, name: str) -> np.ndarray:
    """(F, 3) triangles of the polygon lines: each line's corner count, its corners, then colour values.

    The block is parsed as integers when it has no decimals (float colours are rare), several times
    faster than as floats.
    """
    integers = not any(mark in block for mark in _NOT_INTEGER)
    try:
        numbers = np.fromstring(block, dtype=np.int64 if integers else np.float64, sep=" ")
    except ValueError:  # what numpy raises for a token that is not a number, where it does not warn
        raise broken(name, "a face line holds something that is not a number") from None
    if len(numbers) != tokens.sum():
        raise broken(name, "a face line holds something that is not a number")
    starts = np.cumsum(tokens) - tokens
    corners = numbers[starts]
    short = np.flatnonzero((corners != np.round(corners)) | (corners < 3) | (corners > tokens - 1))
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
