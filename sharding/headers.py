"""The vertex and face counts a PLY or OFF header declares, to check a decoded mesh against.

Parsers that stop at the end of the data hand back whatever they read: a truncated ASCII PLY that
declares 10^9 vertices, or an OFF whose face rows were read as vertices, would otherwise become a
small, wrong sample. Only the header is parsed here (the first 64 KiB); the body is trimesh's.
"""

from __future__ import annotations

import re

HEAD_BYTES = 1 << 16
_PLY_ELEMENT = re.compile(rb"^element\s+(\S+)\s+(\d+)\s*$", re.MULTILINE)
_OFF_COUNTS = re.compile(rb"\A\s*C?OFF\s*(\d+)\s+(\d+)")
_COMMENT = re.compile(rb"#[^\n]*")


def declared_counts(data: bytes, ext: str) -> tuple[int, int] | None:
    """(vertices, faces) from the header of a .ply or .off file; None for other formats or no readable header."""
    head = data[:HEAD_BYTES]
    if ext == ".ply":
        end = head.find(b"end_header")
        if not head.startswith(b"ply") or end < 0:
            return None
        elements = {name: int(count) for name, count in _PLY_ELEMENT.findall(head[:end])}
        return elements.get(b"vertex", 0), elements.get(b"face", 0)
    if ext == ".off":
        match = _OFF_COUNTS.match(_COMMENT.sub(b"", head))
        return (int(match[1]), int(match[2])) if match else None
    return None
