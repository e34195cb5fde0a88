"""Read numeric arrays and attributes of a zarr v2 store held in any container, without zarr.

The official AsymDSD code writes its prepared datasets as zarr v2 groups (`zarr==2.18`): per array a
`.zarray` JSON, per group `.zattrs`, and one file per chunk, compressed by a numcodecs codec. Only
plain numeric arrays with a compressor from `CODECS` and no filters are read: numcodecs also has a
pickle codec and object dtypes, and neither may run on data from elsewhere. An array, and each chunk
decompressed, is bounded by `max_bytes` (the containers' read limit) before anything is allocated.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from sharding.containers import Container
from sharding.limits import Limits
from sharding.records import ShapeError

CODECS = frozenset({"blosc", "zstd", "lz4", "zlib", "gzip", "bz2", "lzma"})


class ZarrError(ValueError):
    """A store entry that is not a plain zarr v2 numeric array or JSON document; the message names it."""


def read_json(container: Container, member: str) -> dict:
    """A `.zattrs` / `.zarray` / `.zgroup` document as a dict (FileNotFoundError when there is none)."""
    try:
        doc = json.loads(container.read(member))
    except ShapeError as err:
        raise ZarrError(f"{member}: {err}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ZarrError(f"{member}: not JSON ({err})") from None
    if not isinstance(doc, dict):
        raise ZarrError(f"{member}: expected a JSON object, got {type(doc).__name__}")
    return doc


@dataclass(frozen=True)
class ArrayMeta:
    """What a `.zarray` says about one array, checked to be a readable numeric array."""

    member: str  # the .zarray member
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    dtype: np.dtype
    order: str
    compressor: dict | None
    separator: str

    @classmethod
    def parse(cls, member: str, doc: dict, max_bytes: int = Limits.max_bytes) -> ArrayMeta:
        try:
            if doc.get("zarr_format") != 2:
                raise ValueError(f"zarr_format {doc.get('zarr_format')!r}, expected 2")
            shape, chunks = tuple(int(s) for s in doc["shape"]), tuple(int(c) for c in doc["chunks"])
            dtype = np.dtype(doc["dtype"]) if isinstance(doc["dtype"], str) else None
            if dtype is None or dtype.kind not in "fiu":
                raise ValueError(f"dtype {doc['dtype']!r} is not a plain numeric type")
            if len(chunks) != len(shape) or min(chunks, default=1) < 1 or min(shape, default=0) < 0:
                raise ValueError(f"chunks {chunks} do not fit shape {shape}")
            for what, dims in (("shape", shape), ("chunks", chunks)):
                if math.prod(dims) * dtype.itemsize > max_bytes:
                    raise ValueError(f"{what} {dims} of {dtype} is over max_bytes {max_bytes}")
            if doc.get("filters"):
                raise ValueError(f"filters {doc['filters']} are not read (only a compressor)")
            compressor = doc.get("compressor")
            if compressor is not None and (not isinstance(compressor, dict) or compressor.get("id") not in CODECS):
                raise ValueError(f"compressor {compressor!r} is not one of {', '.join(sorted(CODECS))}")
            order = doc.get("order", "C")
            if order not in ("C", "F"):
                raise ValueError(f"order {order!r}")
            separator = doc.get("dimension_separator", ".")
            if separator not in (".", "/"):
                raise ValueError(f"dimension_separator {separator!r}")
        except (KeyError, TypeError, ValueError) as err:
            raise ZarrError(f"{member}: not a readable zarr v2 array ({err})") from None
        return cls(member, shape, chunks, dtype, order, compressor, separator)

    @property
    def folder(self) -> str:
        return self.member.rsplit("/", 1)[0] if "/" in self.member else ""

    def chunk_members(self) -> list[tuple[tuple[int, ...], str]]:
        """(chunk grid index, member) for every chunk, in C order."""
        grid = [range(math.ceil(s / c)) for s, c in zip(self.shape, self.chunks)]
        prefix = f"{self.folder}/" if self.folder else ""
        return [(idx, prefix + (self.separator.join(map(str, idx)) or "0")) for idx in itertools.product(*grid)]


def _decode_chunk(meta: ArrayMeta, member: str, data: bytes) -> np.ndarray:
    out = np.empty(meta.chunks, dtype=meta.dtype, order=meta.order)
    if meta.compressor is None:
        if len(data) != out.nbytes:
            raise ZarrError(f"{member}: {len(data)} bytes, expected {out.nbytes} for a {meta.chunks} {meta.dtype} chunk")
        return np.frombuffer(data, dtype=meta.dtype).reshape(meta.chunks, order=meta.order)
    import numcodecs  # the train extra; only stores with compressed chunks need it

    try:  # into `out`: a codec refuses a chunk whose decompressed size is not the chunk's
        numcodecs.get_codec(dict(meta.compressor)).decode(data, out=out)
    except Exception as err:  # each codec raises its own types on corrupt input
        raise ZarrError(f"{member}: cannot be decompressed with {meta.compressor.get('id')} into a {meta.chunks} "
                        f"{meta.dtype} chunk ({err})") from None
    return out


def read_arrays(container: Container, metas: Iterable[ArrayMeta]) -> Iterator[tuple[ArrayMeta, np.ndarray]]:
    """Every array of `metas`, assembled from its chunks, in the order given (one pass over the chunks)."""
    metas = list(metas)
    wanted = [(meta, idx, member) for meta in metas for idx, member in meta.chunk_members()]
    data = container.read_many(member for _, _, member in wanted)
    chunks: dict[str, bytes | Exception] = {}
    for meta in metas:
        out = np.empty(meta.shape, dtype=meta.dtype)
        for idx, member in meta.chunk_members():
            while member not in chunks:
                name, payload = next(data, (None, None))
                if name is None:
                    raise ZarrError(f"{member}: missing chunk")
                chunks[name] = payload
            payload = chunks.pop(member)
            if isinstance(payload, FileNotFoundError):
                raise ZarrError(f"{member}: missing chunk") from None
            if isinstance(payload, Exception):
                raise ZarrError(f"{member}: {payload}") from None
            block = _decode_chunk(meta, member, payload)
            where = tuple(slice(i * c, min((i + 1) * c, s)) for i, c, s in zip(idx, meta.chunks, meta.shape))
            out[where] = block[tuple(slice(0, w.stop - w.start) for w in where)]
        yield meta, out
