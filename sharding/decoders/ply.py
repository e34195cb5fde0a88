"""PLY geometry (Greg Turk's polygon file format), ASCII or binary of either byte order.

The header declares elements in file order, each with a count and properties: scalars of the eight PLY
types, or lists (a count, then that many items). Only `vertex` (x, y, z) and `face` (`vertex_indices`
or `vertex_index`) are read; every other element and property is skipped by its declared layout.
Binary elements of fixed-size rows, and face elements whose lists all have the same length (triangle
meshes), are viewed in place as structured arrays; mixed polygon sizes take a row-by-row walk. Counts
are checked against the bytes or lines that exist before anything is allocated.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from sharding.decoders.polygons import broken, fan_triangles, mesh_or_cloud
from sharding.decoders.text import ragged_take, tokens_per_line
from sharding.records import Geometry

TYPES = {"char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
         "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
         "float": "f4", "float32": "f4", "double": "f8", "float64": "f8"}
FORMATS = {"ascii": None, "binary_little_endian": "<", "binary_big_endian": ">"}
FACE_LISTS = ("vertex_indices", "vertex_index")


@dataclass(frozen=True)
class Property:
    name: str
    type: str  # numpy type code without byte order
    count_type: str | None = None  # set for a list property


@dataclass(frozen=True)
class Element:
    name: str
    count: int
    properties: tuple[Property, ...]

    def noun(self) -> str:
        return {"vertex": "vertices", "face": "faces"}.get(self.name, f"'{self.name}' elements")


def read(data: bytes, name: str) -> Geometry:
    """The mesh (or vertex cloud) of one PLY file."""
    if not data.strip():
        raise broken(name, "it is empty")
    if not data.startswith(b"ply"):
        raise broken(name, "it does not start with 'ply'")
    fmt, elements, body = _header(data, name)
    if fmt is None:
        parsed = _read_ascii(body, elements, name)
    else:
        parsed = _read_binary(body, elements, fmt, name)
    vertex = next((e for e in elements if e.name == "vertex"), None)
    if vertex is None or vertex.count == 0:
        raise broken(name, "it holds no vertices")
    vertices = parsed["vertex"]
    faces = parsed.get("face", np.empty((0, 3), dtype=np.int64))
    if len(faces) and (faces.min() < 0 or faces.max() >= len(vertices)):
        face = int(np.flatnonzero((faces < 0).any(axis=1) | (faces >= len(vertices)).any(axis=1))[0])
        raise broken(name, f"triangle {face + 1} refers to a vertex that does not exist (the file has "
                           f"{len(vertices)} vertices)")
    return mesh_or_cloud(name, vertices, faces)


def _header(data: bytes, name: str) -> tuple[str | None, list[Element], bytes]:
    end = data.find(b"end_header")
    if end < 0:
        raise broken(name, "its header has no 'end_header' line")
    newline = data.find(b"\n", end)
    body = data[newline + 1:] if newline >= 0 else b""
    try:
        lines = data[:end].decode("ascii").splitlines()
    except UnicodeDecodeError:
        raise broken(name, "its header is not ASCII text") from None
    fmt: str | None = "missing"
    elements: list[Element] = []
    for number, line in enumerate(lines[1:], start=2):
        words = line.split()
        if not words or words[0] not in ("format", "element", "property"):
            continue  # comments, obj_info, and the free text some exporters write (Blender 2.4x)
        if words[0] == "format" and len(words) >= 2 and words[1] in FORMATS:
            fmt = FORMATS[words[1]]
        elif words[0] == "element" and len(words) == 3 and words[2].isdigit():
            elements.append(Element(words[1], int(words[2]), ()))
        elif words[0] == "property" and elements and _property(words) is not None:
            last = elements[-1]
            elements[-1] = Element(last.name, last.count, last.properties + (_property(words),))
        else:
            raise broken(name, f"line {number} of its header is not a PLY format, element or property line")
    if fmt == "missing":
        raise broken(name, "its header names no format (ascii, binary_little_endian or binary_big_endian)")
    for element in elements:
        if element.name == "vertex" and not {"x", "y", "z"} <= {p.name for p in element.properties}:
            raise broken(name, "its vertex element has no x, y and z properties")
    return fmt, elements, body


def _property(words: list[str]) -> Property | None:
    if len(words) == 3 and words[1] in TYPES:
        return Property(words[2], TYPES[words[1]])
    if len(words) == 5 and words[1] == "list" and words[2] in TYPES and words[3] in TYPES:
        if TYPES[words[2]][0] in "iu":
            return Property(words[4], TYPES[words[3]], TYPES[words[2]])
    return None


# ASCII ------------------------------------------------------------------------------------------------


def _read_ascii(body: bytes, elements: list[Element], name: str) -> dict[str, np.ndarray]:
    lines = [line for line in body.replace(b"\r", b"").split(b"\n") if line.strip()]
    parsed: dict[str, np.ndarray] = {}
    start = 0
    for element in elements:
        rows = lines[start:start + element.count]
        if len(rows) < element.count:
            raise broken(name, f"the header declares {element.count} {element.noun()}, the data holds {len(rows)}")
        start += element.count
        if element.name == "vertex":
            parsed["vertex"] = _ascii_vertices(rows, element, name)
        elif element.name == "face" and element.count:
            parsed["face"] = _ascii_faces(rows, element, name)
    return parsed


def _ascii_vertices(rows: list[bytes], element: Element, name: str) -> np.ndarray:
    if any(p.count_type for p in element.properties):
        columns = _ascii_walk(rows, element, name)
        return np.stack([columns[a] for a in "xyz"], axis=1)
    names = [p.name for p in element.properties]
    try:
        return np.loadtxt(io.BytesIO(b"\n".join(rows)), usecols=[names.index(a) for a in "xyz"], ndmin=2,
                          dtype=np.float64)
    except ValueError:
        raise broken(name, "a vertex line does not hold its declared numbers") from None


def _ascii_faces(rows: list[bytes], element: Element, name: str) -> np.ndarray:
    columns = _ascii_walk(rows, element, name)
    face_list = next((p.name for p in element.properties if p.name in FACE_LISTS), None)
    if face_list is None:
        raise broken(name, "its face element has no vertex_indices list")
    indices, corners = columns[face_list]
    return _triangles(indices.astype(np.int64), corners, name)


def _ascii_walk(rows: list[bytes], element: Element, name: str) -> dict:
    """Every property of an ASCII element: scalars as columns, lists as (flat items, per-line counts).

    The lines are parsed as one block of numbers and the properties stepped through in declared order,
    all lines at once. A trailing list that a line leaves out entirely counts as empty (Blender 2.77
    declared a per-vertex list it never wrote).
    """
    what = element.name if element.name in ("vertex", "face") else f"'{element.name}'"
    block = b"\n".join(rows)
    try:
        numbers = np.fromstring(block, dtype=np.float64, sep=" ")
    except ValueError:
        raise broken(name, f"a {what} line holds something that is not a number") from None
    tokens = tokens_per_line(block, len(rows))
    if len(numbers) != tokens.sum():
        raise broken(name, f"a {what} line holds something that is not a number")
    line_ends = np.cumsum(tokens)
    position = line_ends - tokens  # each line's first token
    columns: dict = {}
    short = f"a {what} line does not hold the numbers its properties declare"
    for number, prop in enumerate(element.properties):
        present = position < line_ends
        if prop.count_type is None:
            if not present.all():
                raise broken(name, short)
            columns[prop.name] = numbers[position]
            position = position + 1
            continue
        if not present.all() and number < len(element.properties) - 1:
            raise broken(name, short)
        counts = np.where(present, numbers[np.minimum(position, len(numbers) - 1)], 0)
        if np.any((counts < 0) | (counts != np.round(counts))):
            raise broken(name, f"a {what} line's list count is not a whole number")
        counts = counts.astype(np.int64)
        starts = position + present
        if np.any(starts + counts > line_ends):
            raise broken(name, short)
        columns[prop.name] = (ragged_take(numbers, starts, counts), counts)
        position = starts + counts
    if np.any(position != line_ends):
        raise broken(name, short)
    return columns


# Binary -----------------------------------------------------------------------------------------------


def _read_binary(body: bytes, elements: list[Element], order: str, name: str) -> dict[str, np.ndarray]:
    parsed: dict[str, np.ndarray] = {}
    offset = 0
    for element in elements:
        if element.count == 0:
            continue
        if all(p.count_type is None for p in element.properties):
            dtype = np.dtype([(p.name, order + p.type) for p in element.properties])
            available = (len(body) - offset) // dtype.itemsize if dtype.itemsize else 0
            if available < element.count:
                raise broken(name, f"the header declares {element.count} {element.noun()}, the data holds {available}")
            rows = np.frombuffer(body, dtype=dtype, count=element.count, offset=offset)
            offset += element.count * dtype.itemsize
            if element.name == "vertex":
                parsed["vertex"] = np.stack([rows[a].astype(np.float64) for a in "xyz"], axis=1)
            continue
        if element.name == "vertex":
            raise broken(name, "its vertex element has a list property, which is not supported")
        lists, offset = _binary_lists(body, offset, element, order, name)
        if element.name == "face":
            face_list = next((p.name for p in element.properties if p.name in FACE_LISTS), None)
            if face_list is None:
                raise broken(name, "its face element has no vertex_indices list")
            indices, corners = lists[face_list]
            parsed["face"] = _triangles(indices, corners, name)
    return parsed


def _binary_lists(body: bytes, offset: int, element: Element, order: str,
                  name: str) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], int]:
    """Each list property's (flat items, per-row counts), and the offset after the element.

    When every row's lists have the lengths of the first row's, the element is one structured array
    (checked row by row through its count fields); otherwise the rows are walked one at a time.
    """
    first = _row_lengths(body, offset, element, order, name)
    fields = []
    for prop, length in zip(element.properties, first):
        if prop.count_type is None:
            fields.append((prop.name, order + prop.type))
        else:
            fields += [(f"{prop.name}#count", order + prop.count_type), (prop.name, order + prop.type, (length,))]
    dtype = np.dtype(fields)
    if (len(body) - offset) // dtype.itemsize >= element.count:
        rows = np.frombuffer(body, dtype=dtype, count=element.count, offset=offset)
        lists = [p for p in element.properties if p.count_type]
        lengths = [n for n in first if n is not None]
        if all((rows[f"{p.name}#count"] == n).all() for p, n in zip(lists, lengths)):
            return ({p.name: (rows[p.name].reshape(-1).astype(np.int64), np.full(element.count, n))
                     for p, n in zip(lists, lengths)}, offset + element.count * dtype.itemsize)
    return _walk_rows(body, offset, element, order, name)


def _row_lengths(body: bytes, offset: int, element: Element, order: str, name: str) -> list[int | None]:
    """The list lengths of the row at `offset` (None for scalar properties)."""
    lengths: list[int | None] = []
    for prop in element.properties:
        if prop.count_type is None:
            offset += np.dtype(prop.type).itemsize
            lengths.append(None)
            continue
        n = _scalar(body, offset, order + prop.count_type, element, name)
        offset += np.dtype(prop.count_type).itemsize + n * np.dtype(prop.type).itemsize
        lengths.append(n)
    return lengths


def _walk_rows(body: bytes, offset: int, element: Element, order: str,
               name: str) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], int]:
    """Rows of differing list lengths, one at a time (mixed polygon sizes); bounded by the bytes that exist."""
    items: dict[str, list[np.ndarray]] = {p.name: [] for p in element.properties if p.count_type}
    counts: dict[str, list[int]] = {p.name: [] for p in element.properties if p.count_type}
    for row in range(element.count):
        for prop in element.properties:
            if prop.count_type is None:
                offset += np.dtype(prop.type).itemsize
                continue
            n = _scalar(body, offset, order + prop.count_type, element, name)
            offset += np.dtype(prop.count_type).itemsize
            size = n * np.dtype(prop.type).itemsize
            if offset + size > len(body):
                raise broken(name, f"the header declares {element.count} {element.noun()}, the data holds {row}")
            items[prop.name].append(np.frombuffer(body, dtype=order + prop.type, count=n, offset=offset))
            counts[prop.name].append(n)
            offset += size
    return ({k: (np.concatenate(v).astype(np.int64) if v else np.empty(0, dtype=np.int64),
                 np.asarray(counts[k], dtype=np.int64)) for k, v in items.items()}, offset)


def _scalar(body: bytes, offset: int, code: str, element: Element, name: str) -> int:
    size = np.dtype(code).itemsize
    if offset + size > len(body):
        raise broken(name, f"the data ends inside the {element.noun()} the header declares")
    return int(np.frombuffer(body, dtype=code, count=1, offset=offset)[0])


def _triangles(indices: np.ndarray, corners: np.ndarray, name: str) -> np.ndarray:
    few = np.flatnonzero(corners < 3)
    if len(few):
        raise broken(name, f"face {few[0] + 1} has {corners[few[0]]} corners; a face needs at least 3")
    return fan_triangles(indices.astype(np.int64), corners)
