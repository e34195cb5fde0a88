"""The binary side of a glTF 2.0 asset: its container (GLB or JSON), buffers, buffer views and accessors.

Rules follow the Khronos glTF 2.0 specification: section 4.4 (GLB container; version 1 is the
KHR_binary_glTF layout of glTF 1.0), 3.6.1 (buffers and buffer views, `byteStride`), 3.6.2 (accessors,
sparse storage), and the KHR_mesh_quantization extension (integer positions, `normalized` integers).
Every read is bounds-checked against the bytes that exist before an array is made, so a count the file
claims cannot allocate more than the file holds (an accessor without a buffer view, all zeros, has a
fixed cap instead).
"""

from __future__ import annotations

import base64
import json
import re
import struct
import urllib.parse
from collections.abc import Callable

import numpy as np

from sharding.decoders.polygons import broken

COMPONENTS = {5120: "i1", 5121: "u1", 5122: "i2", 5123: "u2", 5125: "u4", 5126: "f4"}
WIDTHS = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT2": 4, "MAT3": 9, "MAT4": 16}
NORMALISERS = {"i1": 127.0, "u1": 255.0, "i2": 32767.0, "u2": 65535.0}
MAX_ZEROS = 1 << 24  # elements an accessor without a buffer view may declare: no bytes of the file back them
ITEMS = {"buffers": "buffer", "bufferViews": "buffer view", "accessors": "accessor"}
_GLB_MAGIC, _JSON_CHUNK, _BIN_CHUNK = b"glTF", 0x4E4F534A, 0x004E4942


def is_index(value: object, count: int) -> bool:
    """Whether a JSON value is an index into a list of `count` items (true and false are not numbers here)."""
    return type(value) is int and 0 <= value < count


def container(data: bytes, name: str) -> tuple[dict, memoryview | None]:
    """(the JSON document, the GLB binary chunk or None) of a .glb or .gltf file; the chunk is not copied."""
    if data[:4] == _GLB_MAGIC:
        return _glb(data, name)
    return _document(data, name, "it is neither a GLB container nor glTF JSON"), None


def _glb(data: bytes, name: str) -> tuple[dict, memoryview | None]:
    if len(data) < 20:
        raise broken(name, "it is shorter than a GLB header")
    _, version, length = struct.unpack_from("<4sII", data)
    if version not in (1, 2):
        raise broken(name, f"it is a version {version} GLB container; only versions 1 and 2 exist")
    if length > len(data):
        raise broken(name, f"its GLB header declares {length} bytes, the file holds {len(data)}")
    if version == 1:  # KHR_binary_glTF: JSON content of a declared length, then the binary body
        content_length = struct.unpack_from("<I", data, 12)[0]
        if 20 + content_length > length:
            raise broken(name, "its GLB JSON content runs past the end of the file")
        return _document(data[20:20 + content_length], name), memoryview(data)[20 + content_length:length]
    chunks, offset = [], 12
    while offset + 8 <= length:
        size, kind = struct.unpack_from("<II", data, offset)
        if offset + 8 + size > length:
            raise broken(name, "a GLB chunk runs past the end of the file")
        chunks.append((kind, memoryview(data)[offset + 8:offset + 8 + size]))
        offset += 8 + size + (-size % 4)
    if not chunks or chunks[0][0] != _JSON_CHUNK:
        raise broken(name, "its GLB container does not start with a JSON chunk")
    binary = next((chunk for kind, chunk in chunks[1:] if kind == _BIN_CHUNK), None)
    return _document(bytes(chunks[0][1]), name), binary


def _document(text: bytes, name: str, invalid: str = "its GLB JSON content is not valid JSON") -> dict:
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: arrays or objects nested too deep to parse
        raise broken(name, invalid) from None
    if not isinstance(document, dict):
        raise broken(name, "its glTF JSON is not an object")
    return document


_FILE_NAME = re.compile(r"[A-Za-z0-9_.\- /]{1,120}")


def _shown(relative: str, index: int) -> str:
    """A buffer's file name as an error may repeat it: only a plain relative name, never arbitrary content."""
    return repr(relative) if _FILE_NAME.fullmatch(relative) else f"file of buffer {index}"


class Buffers:
    """Lazily loaded buffers and typed accessor reads of one asset."""

    def __init__(self, document: dict, binary: memoryview | None, name: str,
                 resolve: Callable[[str], bytes] | None) -> None:
        self.document, self.binary, self.name, self.resolve = document, binary, name, resolve
        self._buffers: dict[int, bytes | memoryview] = {}

    def _item(self, kind: str, index: object) -> dict:
        items = self.document.get(kind, [])
        if isinstance(items, list) and is_index(index, len(items)) and isinstance(items[index], dict):
            return items[index]
        if type(index) is int:
            raise broken(self.name, f"it refers to {ITEMS[kind]} {index}, which does not exist")
        raise broken(self.name, f"it refers to a {ITEMS[kind]} without giving its index" if index is None
                     else f"it refers to a {ITEMS[kind]} by something that is not an index")

    def buffer(self, index: int) -> bytes | memoryview:
        buffer = self._item("buffers", index)
        if index not in self._buffers:
            self._buffers[index] = self._load(index, buffer)
        return self._buffers[index]

    def _load(self, index: int, buffer: dict) -> bytes | memoryview:
        """Buffer 0 without a uri is the GLB binary chunk; the others are base64 data URIs or files
        beside the asset, read through `resolve`."""
        uri = buffer.get("uri")
        if uri is None:
            if index != 0 or self.binary is None:
                raise broken(self.name, f"buffer {index} has no uri and there is no GLB binary chunk")
            data = self.binary
        elif not isinstance(uri, str):
            raise broken(self.name, f"buffer {index} has a uri that is not a string")
        elif uri.startswith("data:"):
            try:
                data = base64.b64decode(uri.split(",", 1)[1], validate=True)
            except (IndexError, ValueError):
                raise broken(self.name, f"buffer {index} has a data URI that is not base64") from None
        else:
            relative = urllib.parse.unquote(uri)
            try:
                if self.resolve is None:
                    raise FileNotFoundError(relative)
                data = self.resolve(relative)
            except (FileNotFoundError, KeyError):
                raise broken(self.name, f"the buffer {_shown(relative, index)} it refers to is missing") from None
            except (OSError, ValueError):  # unreadable, or a path that leaves the source (safe_member)
                raise broken(self.name, f"the buffer {_shown(relative, index)} it refers to cannot be read") from None
        declared = buffer.get("byteLength", len(data))
        if type(declared) is not int:
            raise broken(self.name, f"buffer {index} has a byte length that is not a whole number")
        if declared > len(data):
            raise broken(self.name, f"buffer {index} declares {declared} bytes, it holds {len(data)}")
        return data

    def view(self, index: int) -> tuple[bytes | memoryview, int, int, int | None]:
        """(buffer bytes, start, length, byteStride) of a buffer view, checked against its buffer."""
        view = self._item("bufferViews", index)
        data = self.buffer(view.get("buffer"))
        start, length, stride = view.get("byteOffset", 0), view.get("byteLength"), view.get("byteStride")
        if not all(type(v) is int and v >= 0 for v in (start, length)):
            raise broken(self.name, f"buffer view {index} has a byte offset or length that is not a count")
        if start + length > len(data):
            raise broken(self.name, f"buffer view {index} reaches past the end of its buffer")
        if stride is not None and not (type(stride) is int and stride > 0):
            raise broken(self.name, f"buffer view {index} has a byte stride that is not a positive count")
        return data, start, length, stride

    def accessor(self, index: int) -> np.ndarray:
        """(count, width) array of an accessor: float64 for float or normalized data, int64 otherwise."""
        acc = self._item("accessors", index)
        kind, width = _lookup(COMPONENTS, acc.get("componentType")), _lookup(WIDTHS, acc.get("type"))
        count = acc.get("count")
        if kind is None or width is None or type(count) is not int or count < 0:
            raise broken(self.name, f"accessor {index} has an unknown component type, type or count")
        if "bufferView" in acc:
            values = self._strided(index, acc, kind, width, count)
        elif count > MAX_ZEROS:
            raise broken(self.name, f"accessor {index} declares {count} elements without a buffer view to "
                                    f"hold them (at most {MAX_ZEROS} are made of zeros)")
        else:  # 3.6.2.3 and the accessor schema: no buffer view means zeros, which sparse values may override
            values = np.zeros((count, width), dtype=kind)
        if "sparse" in acc:
            values = self._sparse(index, acc["sparse"], values.copy(), kind, width)
        if acc.get("normalized") and kind in NORMALISERS:
            return np.maximum(values / NORMALISERS[kind], -1.0)
        return values.astype(np.float64 if kind == "f4" else np.int64)

    def _strided(self, index: int, acc: dict, kind: str, width: int, count: int) -> np.ndarray:
        data, start, length, stride = self.view(acc["bufferView"])
        offset = acc.get("byteOffset", 0)
        item = np.dtype(kind).itemsize * width
        stride = stride or item
        if type(offset) is not int or offset < 0 or stride < item:
            raise broken(self.name, f"accessor {index} has a bad byte offset or stride")
        if count and offset + stride * (count - 1) + item > length:
            raise broken(self.name, f"accessor {index} reads past the end of buffer view {acc['bufferView']}")
        if count == 0:
            return np.zeros((0, width), dtype=kind)
        return np.ndarray((count, width), dtype="<" + kind, buffer=data, offset=start + offset,
                          strides=(stride, np.dtype(kind).itemsize))

    def _sparse(self, index: int, sparse: object, values: np.ndarray, kind: str, width: int) -> np.ndarray:
        """Sparse substitution (3.6.2.3): values[indices[i]] = substitutes[i]."""
        spec_i, spec_v = (sparse.get(k) if isinstance(sparse, dict) else None for k in ("indices", "values"))
        if not isinstance(spec_i, dict) or not isinstance(spec_v, dict):
            raise broken(self.name, f"accessor {index} has sparse storage without indices and values")
        count, index_kind = sparse.get("count"), _lookup(COMPONENTS, spec_i.get("componentType"))
        if type(count) is not int or count < 1 or index_kind not in ("u1", "u2", "u4"):
            raise broken(self.name, f"accessor {index} has a sparse count or index type glTF does not allow")
        rows = self._packed(index, spec_i, index_kind, 1, count).reshape(-1).astype(np.int64)
        substitutes = self._packed(index, spec_v, kind, width, count)
        if rows.max() >= len(values):
            raise broken(self.name, f"accessor {index} has sparse indices past its count")
        values[rows] = substitutes
        return values

    def _packed(self, index: int, spec: dict, kind: str, width: int, count: int) -> np.ndarray:
        """`count` tightly packed elements of sparse indices or values, checked against their buffer view."""
        data, start, length, _ = self.view(spec.get("bufferView"))
        offset = spec.get("byteOffset", 0)
        size = np.dtype(kind).itemsize * width * count
        if type(offset) is not int or offset < 0 or offset + size > length:
            raise broken(self.name, f"accessor {index}'s sparse storage reads past its buffer view")
        flat = np.frombuffer(data, dtype="<" + kind, count=width * count, offset=start + offset)
        return flat.reshape(count, width)


def _lookup(table: dict, key: object) -> str | int | None:
    """`table[key]`, or None for a key it lacks or a JSON value that cannot be a key (a list, an object)."""
    return table.get(key) if isinstance(key, int | str) else None
