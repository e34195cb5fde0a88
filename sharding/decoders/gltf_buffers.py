"""The binary side of a glTF 2.0 asset: its container (GLB or JSON), buffers, buffer views and accessors.

Rules follow the Khronos glTF 2.0 specification: section 4.4 (GLB container; version 1 is the
KHR_binary_glTF layout of glTF 1.0), 3.6 (buffers and buffer
views, `byteStride`), 3.6.2 (accessors, `normalized` integers, sparse storage), and the
KHR_mesh_quantization extension (integer positions). Every read is bounds-checked against the bytes
that exist before an array is made, so a count the file claims cannot allocate more than the file holds.
"""

from __future__ import annotations

import base64
import json
import struct
import urllib.parse
from collections.abc import Callable

import numpy as np

from sharding.decoders.polygons import broken

COMPONENTS = {5120: "i1", 5121: "u1", 5122: "i2", 5123: "u2", 5125: "u4", 5126: "f4"}
WIDTHS = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT2": 4, "MAT3": 9, "MAT4": 16}
NORMALISERS = {"i1": 127.0, "u1": 255.0, "i2": 32767.0, "u2": 65535.0}
_GLB_MAGIC, _JSON_CHUNK, _BIN_CHUNK = b"glTF", 0x4E4F534A, 0x004E4942


def container(data: bytes, name: str) -> tuple[dict, bytes | None]:
    """(the JSON document, the GLB binary chunk or None) of a .glb or .gltf file."""
    if data[:4] == _GLB_MAGIC:
        return _glb(data, name)
    return _document(data, name, "it is neither a GLB container nor glTF JSON"), None


def _glb(data: bytes, name: str) -> tuple[dict, bytes | None]:
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
        return _document(data[20:20 + content_length], name), data[20 + content_length:length]
    chunks, offset = [], 12
    while offset + 8 <= length:
        size, kind = struct.unpack_from("<II", data, offset)
        if offset + 8 + size > length:
            raise broken(name, "a GLB chunk runs past the end of the file")
        chunks.append((kind, data[offset + 8:offset + 8 + size]))
        offset += 8 + size + (-size % 4)
    if not chunks or chunks[0][0] != _JSON_CHUNK:
        raise broken(name, "its GLB container does not start with a JSON chunk")
    binary = next((chunk for kind, chunk in chunks[1:] if kind == _BIN_CHUNK), None)
    return _document(chunks[0][1], name), binary


def _document(text: bytes, name: str, invalid: str = "its GLB JSON content is not valid JSON") -> dict:
    try:
        document = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        raise broken(name, invalid) from None
    if not isinstance(document, dict):
        raise broken(name, "its glTF JSON is not an object")
    return document


class Buffers:
    """Lazily loaded buffers and typed accessor reads of one asset."""

    def __init__(self, document: dict, binary: bytes | None, name: str,
                 resolve: Callable[[str], bytes] | None) -> None:
        self.document, self.binary, self.name, self.resolve = document, binary, name, resolve
        self._buffers: dict[int, bytes] = {}

    def _item(self, kind: str, index: object) -> dict:
        items = self.document.get(kind, [])
        if not isinstance(index, int) or not isinstance(items, list) or not 0 <= index < len(items) \
                or not isinstance(items[index], dict):
            raise broken(self.name, f"it refers to {kind[:-1]} {index}, which does not exist")
        return items[index]

    def buffer(self, index: int) -> bytes:
        if index not in self._buffers:
            self._buffers[index] = self._load(index, self._item("buffers", index))
        return self._buffers[index]

    def _load(self, index: int, buffer: dict) -> bytes:
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
                raise broken(self.name, f"the buffer {relative!r} it refers to is missing") from None
            except (OSError, ValueError):  # unreadable, or a path that leaves the source (containers.safe_member)
                raise broken(self.name, f"the buffer {relative!r} it refers to cannot be read") from None
        declared = buffer.get("byteLength", len(data))
        if not isinstance(declared, int) or declared > len(data):
            raise broken(self.name, f"buffer {index} declares {declared} bytes, it holds {len(data)}")
        return data

    def view(self, index: int) -> tuple[bytes, int, int, int | None]:
        """(buffer bytes, start, length, byteStride) of a buffer view, checked against its buffer."""
        view = self._item("bufferViews", index)
        data = self.buffer(view.get("buffer"))
        start, length, stride = view.get("byteOffset", 0), view.get("byteLength"), view.get("byteStride")
        if not all(isinstance(v, int) and v >= 0 for v in (start, length)) or start + length > len(data):
            raise broken(self.name, f"buffer view {index} reaches past the end of its buffer")
        return data, start, length, stride

    def accessor(self, index: int) -> np.ndarray:
        """(count, width) array of an accessor: float64 for float or normalized data, int64 otherwise."""
        acc = self._item("accessors", index)
        kind, width = COMPONENTS.get(acc.get("componentType")), WIDTHS.get(acc.get("type"))
        count = acc.get("count")
        if kind is None or width is None or not isinstance(count, int) or count < 0:
            raise broken(self.name, f"accessor {index} has an unknown component type, type or count")
        if "bufferView" in acc:
            values = self._strided(index, acc, kind, width, count)
        else:
            values = np.zeros((count if "sparse" in acc else 0, width), dtype=kind)
            if "sparse" not in acc and count:
                raise broken(self.name, f"accessor {index} has neither a buffer view nor sparse values")
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
        if not isinstance(offset, int) or offset < 0 or stride < item:
            raise broken(self.name, f"accessor {index} has a bad byte offset or stride")
        if count and offset + stride * (count - 1) + item > length:
            raise broken(self.name, f"accessor {index} reads past the end of buffer view {acc['bufferView']}")
        if count == 0:
            return np.zeros((0, width), dtype=kind)
        return np.ndarray((count, width), dtype="<" + kind, buffer=data, offset=start + offset,
                          strides=(stride, np.dtype(kind).itemsize))

    def _sparse(self, index: int, sparse: dict, values: np.ndarray, kind: str, width: int) -> np.ndarray:
        """Sparse substitution (glTF 2.0, 3.6.2.4): values[indices[i]] = substitutes[i]."""
        count = sparse.get("count")
        spec_i, spec_v = sparse.get("indices", {}), sparse.get("values", {})
        index_kind = COMPONENTS.get(spec_i.get("componentType"))
        if not isinstance(count, int) or count < 1 or index_kind not in ("u1", "u2", "u4"):
            raise broken(self.name, f"accessor {index} has malformed sparse storage")
        rows = self._packed(index, spec_i, index_kind, 1, count).reshape(-1).astype(np.int64)
        substitutes = self._packed(index, spec_v, kind, width, count)
        if rows.max() >= len(values):
            raise broken(self.name, f"accessor {index} has sparse indices past its count")
        values[rows] = substitutes
        return values

    def _packed(self, index: int, spec: dict, kind: str, width: int, count: int) -> np.ndarray:
        data, start, length, _ = self.view(spec.get("bufferView"))
        offset = spec.get("byteOffset", 0)
        size = np.dtype(kind).itemsize * width * count
        if not isinstance(offset, int) or offset < 0 or offset + size > length:
            raise broken(self.name, f"accessor {index}'s sparse storage reads past its buffer view")
        return np.frombuffer(data, dtype="<" + kind, count=width * count, offset=start + offset).reshape(count, width)
