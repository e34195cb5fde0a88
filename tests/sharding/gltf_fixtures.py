"""Small glTF assets built byte by byte for the reader's tests: one buffer, any accessors, nodes, scenes."""

from __future__ import annotations

import base64
import json
import struct

import numpy as np

SQUARE = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], dtype=np.float32)
FLOAT, UBYTE, USHORT, SHORT = 5126, 5121, 5123, 5122


class Asset:
    """Accumulates binary data and the JSON that describes it; `gltf()` or `glb()` writes the file."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.doc: dict = {"asset": {"version": "2.0"}, "buffers": [{}], "bufferViews": [], "accessors": [],
                          "meshes": [], "nodes": [], "scenes": [{"nodes": []}], "scene": 0}

    def view(self, raw: bytes, stride: int | None = None) -> int:
        self.data += b"\0" * (-len(self.data) % 4)
        view = {"buffer": 0, "byteOffset": len(self.data), "byteLength": len(raw)}
        if stride:
            view["byteStride"] = stride
        self.data += raw
        self.doc["bufferViews"].append(view)
        return len(self.doc["bufferViews"]) - 1

    def accessor(self, array: np.ndarray, kind: str, component: int = FLOAT, **extra: object) -> int:
        array = np.ascontiguousarray(array)
        fields = {"bufferView": self.view(array.tobytes()), "componentType": component, "count": len(array),
                  "type": kind, **extra}
        self.doc["accessors"].append(fields)
        return len(self.doc["accessors"]) - 1

    def sparse(self, rows: list[int], values: np.ndarray, row_type: int = USHORT) -> dict:
        """An accessor's `sparse` field: its elements `rows` become the float `values`."""
        rows_view = self.view(np.array(rows, {UBYTE: np.uint8, USHORT: np.uint16}[row_type]).tobytes())
        return {"count": len(rows), "indices": {"bufferView": rows_view, "componentType": row_type},
                "values": {"bufferView": self.view(np.asarray(values, np.float32).tobytes())}}

    def mesh(self, positions: np.ndarray = SQUARE, indices: list[int] | None = (0, 1, 2, 0, 2, 3),
             mode: int = 4, **primitive: object) -> int:
        position = self.accessor(np.asarray(positions, np.float32), "VEC3")
        prim = {"attributes": {"POSITION": position}, "mode": mode}
        if indices is not None:
            prim["indices"] = self.accessor(np.asarray(indices, np.uint16), "SCALAR", USHORT)
        prim.update(primitive)
        self.doc["meshes"].append({"primitives": [prim]})
        return len(self.doc["meshes"]) - 1

    def node(self, root: bool = True, **fields: object) -> int:
        self.doc["nodes"].append(fields)
        index = len(self.doc["nodes"]) - 1
        if root:
            self.doc["scenes"][0]["nodes"].append(index)
        return index

    def gltf(self, uri: str | None = None) -> bytes:
        """JSON with the buffer embedded as a data URI, or referring to `uri`."""
        self.doc["buffers"][0] = {"byteLength": len(self.data),
                                  "uri": uri or "data:application/octet-stream;base64,"
                                  + base64.b64encode(bytes(self.data)).decode()}
        return json.dumps(self.doc).encode()

    def glb(self) -> bytes:
        self.doc["buffers"][0] = {"byteLength": len(self.data)}
        text = json.dumps(self.doc).encode()
        text += b" " * (-len(text) % 4)
        body = bytes(self.data) + b"\0" * (-len(self.data) % 4)
        chunks = (struct.pack("<II", len(text), 0x4E4F534A) + text
                  + struct.pack("<II", len(body), 0x004E4942) + body)
        return struct.pack("<4sII", b"glTF", 2, 12 + len(chunks)) + chunks
