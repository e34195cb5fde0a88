"""STL geometry, binary or ASCII: every facet is one triangle with its own three corners.

Binary STL (an 80-byte header, a uint32 facet count, then 50-byte records of a normal, three corners
and an attribute word) is viewed in place as a structured array; ASCII STL (`solid` ... `facet normal`
... `vertex x y z` ...) is parsed as the numbers of its `vertex` lines. Normals are ignored: sampling
needs only the surface. Corners are not merged, since sampling does not need shared vertices.
"""

from __future__ import annotations

import io

import numpy as np

from sharding.decoders.polygons import broken, mesh_or_cloud
from sharding.records import Geometry

_HEADER = 80
_RECORD = np.dtype([("normal", "<f4", 3), ("corners", "<f4", (3, 3)), ("attribute", "<u2")])


def read(data: bytes, name: str) -> Geometry:
    """The triangles of one STL file."""
    if not data.strip():
        raise broken(name, "it is empty")
    if _is_binary(data):
        return _binary(data, name)
    return _ascii(data, name)


def _is_binary(data: bytes) -> bool:
    """Binary when the size is exactly what the facet count says; ASCII files start with `solid` but so
    do some binary headers, hence the size test first."""
    if len(data) >= _HEADER + 4:
        count = int(np.frombuffer(data, dtype="<u4", count=1, offset=_HEADER)[0])
        if len(data) == _HEADER + 4 + count * _RECORD.itemsize:
            return True
    return data.lstrip()[:5].lower() != b"solid"


def _binary(data: bytes, name: str) -> Geometry:
    if len(data) < _HEADER + 4:
        raise broken(name, f"it is {len(data)} bytes, shorter than a binary STL header")
    count = int(np.frombuffer(data, dtype="<u4", count=1, offset=_HEADER)[0])
    have = (len(data) - _HEADER - 4) // _RECORD.itemsize
    if count > have:
        raise broken(name, f"the header declares {count} facets, the data holds {have}")
    records = np.frombuffer(data, dtype=_RECORD, count=count, offset=_HEADER + 4)
    vertices = records["corners"].reshape(-1, 3).astype(np.float64)
    return mesh_or_cloud(name, vertices, np.arange(len(vertices), dtype=np.int64).reshape(-1, 3))


def _ascii(data: bytes, name: str) -> Geometry:
    lines = [line for line in (raw.lstrip() for raw in data.splitlines()) if line[:6] == b"vertex"]
    if not lines:
        raise broken(name, "it holds no facets ('vertex' lines)")
    if len(lines) % 3:
        raise broken(name, f"it has {len(lines)} 'vertex' lines, not three per facet")
    try:
        vertices = np.loadtxt(io.BytesIO(b"\n".join(lines)), usecols=(1, 2, 3), ndmin=2, dtype=np.float64)
    except ValueError:
        raise broken(name, "a 'vertex' line does not hold three numbers") from None
    return mesh_or_cloud(name, vertices, np.arange(len(vertices), dtype=np.int64).reshape(-1, 3))
