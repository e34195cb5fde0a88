"""PLY geometry (Greg Turk's polygon file format), ASCII or binary of either byte order.

The header declares elements in file order, each with a count and properties: scalars of the eight PLY
types, or lists (a count, then that many items). Only `vertex` (x, y, z) and `face` (`vertex_indices`
or `vertex_index`) are read; every other element and property is skipped by its declared layout.
Counts are checked against the bytes or lines that exist before anything is allocated. ASCII bodies are
parsed here, a block of numbers per element; binary ones in `ply_binary`.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass

import numpy as np

from sharding.decoders.ply_binary import read_binary
from sharding.decoders.polygons import broken, fan_triangles, mesh_or_cloud, read_or_sentence
from sharding.decoders.text import nonblank_lines, ragged_take
from sharding.records import Geometry

# Turk's eight types, and the sized names later writers (VTK, PCL) use for the same types.
TYPES = {"char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
         "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
         "float": "f4", "float32": "f4", "double": "f8", "float64": "f8"}
FORMATS = {"ascii": None, "binary_little_endian": "<", "binary_big_endian": ">"}
FACE_LISTS = ("vertex_indices", "vertex_index")
_END_HEADER = re.compile(rb"^end_header[ \t]*\r?(?:\n|\Z)", re.MULTILINE)
_NOT_INTEGER = (b".", b"e", b"E", b"n", b"N", b"i", b"I")  # a decimal point, an exponent, nan or inf


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
    position: int  # 1-based, in header order: how sentences name an element other than vertex and face

    def noun(self) -> str:
        """What the element's rows are called in a sentence; names from the file are not quoted."""
        return {"vertex": "vertices", "face": "faces"}.get(self.name, f"rows of element {self.position}")

    def row(self, index: int) -> str:
        """Row `index` (0-based) in a sentence: 'face 3', 'vertex 3' or 'row 3 of element 2'."""
        if self.name in ("vertex", "face"):
            return f"{self.name} {index + 1}"
        return f"row {index + 1} of element {self.position}"


def read(data: bytes, name: str) -> Geometry:
    """The mesh (or vertex cloud) of one PLY file."""
    return read_or_sentence(_read, data, name, "PLY")


def _read(data: bytes, name: str) -> Geometry:
    if not data or data.isspace():
        raise broken(name, "it is empty")
    if not data.startswith(b"ply"):
        raise broken(name, "it does not start with 'ply'")
    fmt, elements, body_start = _header(data, name)
    wanted = {"vertex": ("x", "y", "z")}
    face_list = _face_list(elements, name)
    if face_list:
        wanted["face"] = (face_list,)
    if fmt is None:
        columns = _read_ascii(data[body_start:], elements, wanted, name)
    else:
        columns = read_binary(data, body_start, elements, wanted, fmt, name)
    x, y, z = (columns["vertex"][axis] for axis in "xyz")
    vertices = np.empty((len(x), 3), dtype=np.float64)
    vertices[:, 0], vertices[:, 1], vertices[:, 2] = x, y, z
    faces = np.empty((0, 3), dtype=np.int64)
    if "face" in columns:
        faces = _triangles(*columns["face"][face_list], len(vertices), name)
    return mesh_or_cloud(name, vertices, faces)


def _header(data: bytes, name: str) -> tuple[str | None, list[Element], int]:
    """The body's format (None for ASCII, else the byte order), the elements, and where the body starts."""
    end = _END_HEADER.search(data)
    if end is None:
        raise broken(name, "its header has no 'end_header' line")
    try:
        lines = data[:end.start()].decode("ascii").splitlines()
    except UnicodeDecodeError:
        raise broken(name, "its header is not ASCII text") from None
    fmt: str | None = "missing"
    elements: list[Element] = []
    for number, line in enumerate(lines[1:], start=2):
        words = line.split()
        if not words or words[0] not in ("format", "element", "property"):
            continue  # comment and obj_info lines, and the free text some exporters write (Blender 2.4x)
        if words[0] == "format" and len(words) >= 2 and words[1] in FORMATS:
            fmt = FORMATS[words[1]]
        elif words[0] == "element" and len(words) == 3 and words[2].isdigit():
            elements.append(Element(words[1], int(words[2]), (), len(elements) + 1))
        elif words[0] == "property" and elements and _property(words) is not None:
            last = elements[-1]
            elements[-1] = Element(last.name, last.count, last.properties + (_property(words),), last.position)
        else:
            raise broken(name, f"line {number} of its header is not a PLY format, element or property line")
    if fmt == "missing":
        raise broken(name, "its header names no format (ascii, binary_little_endian or binary_big_endian)")
    vertex = next((e for e in elements if e.name == "vertex"), None)
    if vertex is None or vertex.count == 0:
        raise broken(name, "it holds no vertices")
    if not {"x", "y", "z"} <= {p.name for p in vertex.properties if p.count_type is None}:
        raise broken(name, "its vertex element has no x, y and z properties")
    return fmt, elements, end.end()


def _property(words: list[str]) -> Property | None:
    """`property <type> <name>`, or `property list <count type> <item type> <name>` with an integer count."""
    if len(words) == 3 and words[1] in TYPES:
        return Property(words[2], TYPES[words[1]])
    if len(words) == 5 and words[1] == "list" and TYPES.get(words[2], "f")[0] in "iu" and words[3] in TYPES:
        return Property(words[4], TYPES[words[3]], TYPES[words[2]])
    return None


def _face_list(elements: list[Element], name: str) -> str:
    """The name of the face element's corner list ('' when there is no face element)."""
    face = next((e for e in elements if e.name == "face"), None)
    if face is None or face.count == 0:
        return ""
    found = next((p.name for p in face.properties if p.name in FACE_LISTS and p.count_type), None)
    if found is None:
        raise broken(name, "its face element has no vertex_indices list")
    return found


def _triangles(items: np.ndarray, corners: np.ndarray | int, num_vertices: int, name: str) -> np.ndarray:
    """The faces' corner lists, fan-triangulated: flat items with each face's corner count, or (F, k)
    items with k, when every face has k corners (a triangle mesh then needs no per-face work)."""
    counts = np.asarray(corners).reshape(-1)  # one count for all faces, or one per face
    few = np.flatnonzero(counts < 3)
    if len(few):
        raise broken(name, f"face {few[0] + 1} has {counts[few[0]]} corners; a face needs at least 3")
    if items.dtype.kind == "f":
        fractional = np.flatnonzero(items != np.round(items))
        if len(fractional):
            raise broken(name, f"face {_face_of(fractional[0], corners)} has a corner that is not a whole vertex "
                               f"number")
    indices = items.astype(np.int64).reshape(-1)  # cast first: a strided view would be copied twice
    if indices.view(np.uint64).max() >= num_vertices:  # one pass: a negative index views as a huge one
        bad = int(np.flatnonzero((indices < 0) | (indices >= num_vertices))[0])
        raise broken(name, f"face {_face_of(bad, corners)} refers to a vertex that does not exist (the file has "
                           f"{num_vertices} vertices)")
    if isinstance(corners, int):
        return indices.reshape(-1, 3) if corners == 3 else fan_triangles(indices, np.full(len(items), corners))
    return fan_triangles(indices, corners)


def _face_of(item: int, corners: np.ndarray | int) -> int:
    """The 1-based number of the face that holds corner `item` of the flat corner list."""
    if isinstance(corners, int):
        return item // corners + 1
    return int(np.searchsorted(np.cumsum(corners), item, side="right")) + 1


# ASCII: one element per line, numbers separated by whitespace. --------------------------------------------


def _read_ascii(body: bytes, elements: list[Element], wanted: dict[str, tuple[str, ...]],
                name: str) -> dict[str, dict]:
    """The wanted properties of the wanted elements. Each element takes the next `count` lines that hold
    something; an element's lines are parsed as one block of numbers."""
    if b"\r" in body:
        body = body.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    starts, ends, tokens = nonblank_lines(body)
    parsed: dict[str, dict] = {}
    line = 0
    for element in elements:
        if len(starts) - line < element.count:
            raise broken(name, f"the header declares {element.count} {element.noun()}, the data holds "
                               f"{len(starts) - line}")
        if element.count and element.name in wanted:
            block = body[starts[line]:ends[line + element.count - 1]]
            if any(prop.count_type for prop in element.properties):
                columns = _ascii_walk(block, tokens[line:line + element.count], element, name)
                parsed[element.name] = {key: columns[key] for key in wanted[element.name]}
            else:
                parsed[element.name] = _ascii_table(block, tokens[line:line + element.count], element,
                                                    wanted[element.name], name)
        line += element.count
    return parsed


def _ascii_table(block: bytes, tokens: np.ndarray, element: Element, keys: tuple[str, ...],
                 name: str) -> dict[str, np.ndarray]:
    """The `keys` columns of an element of scalars, one number per property on every line. numpy's text
    reader converts only the columns asked for, twice as fast as parsing every number."""
    what = element.name  # only vertex and face elements are parsed
    if np.any(tokens != len(element.properties)):
        raise broken(name, f"a {what} line does not hold the numbers its properties declare")
    names = [prop.name for prop in element.properties]
    try:
        table = np.loadtxt(io.BytesIO(block), dtype=np.float64, usecols=[names.index(key) for key in keys],
                           comments=None, ndmin=2)
    except ValueError:
        raise broken(name, f"a {what} line holds something that is not a number") from None
    return {key: table[:, index] for index, key in enumerate(keys)}


def _ascii_walk(block: bytes, tokens: np.ndarray, element: Element, name: str) -> dict:
    """Every property of an ASCII element: scalars as columns, lists as (flat items, per-line counts).

    The properties are stepped through in declared order, all lines at once. A trailing list that a line
    leaves out entirely counts as empty (Blender 2.77 declared a per-vertex list it never wrote).
    """
    what = element.name  # only vertex and face elements are parsed
    numbers = _numbers(block, element, int(tokens.sum()))
    if numbers is None:
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
            raise broken(name, f"a {what} line's list length is not a whole number of items")
        starts = position + present
        if np.any(counts > line_ends - starts):
            raise broken(name, short)
        counts = counts.astype(np.int64)
        columns[prop.name] = (ragged_take(numbers, starts, counts), counts)
        position = starts + counts
    if np.any(position != line_ends):
        raise broken(name, short)
    return columns


def _numbers(block: bytes, element: Element, expected: int) -> np.ndarray | None:
    """The block's numbers (None unless all `expected` tokens are numbers). An element of integer types
    written without decimals is parsed as integers, several times faster than as floats."""
    types = [p.type for p in element.properties] + [p.count_type for p in element.properties if p.count_type]
    integral = all(t[0] in "iu" for t in types) and not any(mark in block for mark in _NOT_INTEGER)
    try:
        numbers = np.fromstring(block, dtype=np.int64 if integral else np.float64, sep=" ")
    except ValueError:  # what numpy raises for a token that is not a number, where it does not warn
        return None
    return numbers if len(numbers) == expected else None
