"""Random access to the samples of WebDataset shards, local or remote.

A local shard is read in place; a remote one (s3://...) is downloaded once into a per-process cache
directory (bounded, least recently used evicted first), with retries and exponential backoff on
transient errors. Each shard is checked before its first use in a process: size and sha256 against
the manifest, then its tar structure while the member index is built (every sample must hold
`points.npy` and `json`, adjacent, and may hold `parts.npy`, per-point part labels). A shard that
fails any of this raises `ShardError`, which names the shard and the reason; the loader's fault
policy decides whether to skip it or stop.

One fsspec filesystem (hence one S3 client) is created per process and storage options, and reused.
The files of the most recently used shards stay open (the loader reads a few shards at a time, and an
open per sample cost ~30 us). Points are decoded without copies: the member is read into one buffer and
the array is a view of it.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import math
import os
import shutil
import tarfile
import tempfile
import time
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from typing import BinaryIO

import fsspec
import numpy as np
import numpy.lib.format as npy_format
from fsspec.implementations.local import LocalFileSystem

from pipeline.config import ReadConfig
from pipeline.manifest import ShardInfo

REQUIRED = ("points.npy", "json")
OPEN_FILES = 16  # shard files a store keeps open; the loader's block shuffle reads 8 shards at a time


class ShardError(Exception):
    """A shard that cannot be used: unreadable after retries, wrong checksum or broken tar."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"shard {url}: {reason}")
        self.url = url
        self.reason = reason


@dataclass(frozen=True)
class Sample:
    key: str
    points: np.ndarray  # (N, 3) as stored (float32 or float16)
    meta: dict
    parts: np.ndarray | None = None  # (N,) integer part of each point, indexing meta["part_names"]


@lru_cache(maxsize=None)
def _filesystem(protocol: str, options_json: str) -> fsspec.AbstractFileSystem:
    return fsspec.filesystem(protocol, **json.loads(options_json))


def filesystem_for(url: str, storage_options: dict | None) -> tuple[fsspec.AbstractFileSystem, str]:
    """The process-wide filesystem for `url`'s protocol and options, and the path within it."""
    protocol, path = fsspec.core.split_protocol(url)
    protocol = protocol or "file"
    options = storage_options if protocol != "file" else {}
    return _filesystem(protocol, json.dumps(options or {}, sort_keys=True)), path


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def index_tar(path: str, url: str) -> list[tuple[str, dict[str, tuple[int, int]]]]:
    """[(key, {suffix: (data offset, size)})] in tar order, with every sample complete."""
    samples: list[tuple[str, dict[str, tuple[int, int]]]] = []
    seen: set[str] = set()
    try:
        with tarfile.open(path, "r:") as tar:
            for info in tar:
                if not info.isfile():
                    continue
                key, _, suffix = os.path.basename(info.name).partition(".")
                if samples and samples[-1][0] == key:
                    samples[-1][1][suffix] = (info.offset_data, info.size)
                    continue
                if key in seen:
                    raise ShardError(url, f"members of sample {key} are not adjacent")
                seen.add(key)
                samples.append((key, {suffix: (info.offset_data, info.size)}))
    except (tarfile.TarError, EOFError, OSError) as err:
        raise ShardError(url, f"broken tar: {type(err).__name__}: {err}") from None
    for key, members in samples:
        missing = [m for m in REQUIRED if m not in members]
        if missing:
            raise ShardError(url, f"sample {key} lacks {', '.join(missing)}")
    return samples


class ShardStore:
    """Per-process shard access: verified local paths, member indices, sample decoding."""

    def __init__(self, policy: ReadConfig = ReadConfig(), storage_options: dict | None = None) -> None:
        self.policy = policy
        self.storage_options = storage_options or {}
        self._indices: dict[str, list[tuple[str, dict[str, tuple[int, int]]]]] = {}
        self._cached: OrderedDict[str, tuple[str, int]] = OrderedDict()  # url -> (local path, bytes)
        self._cache_dir = policy.cache_dir
        self._files: OrderedDict[str, BinaryIO] = OrderedDict()  # local path -> open file, LRU order
        self.retries_used = 0

    def num_samples(self, shard: ShardInfo) -> int:
        return len(self._index(shard))

    def sample(self, shard: ShardInfo, index: int) -> Sample:
        path = self._local_path(shard)
        key, members = self._index(shard)[index]
        f = self._file(path)
        data = _read(f, *members["points.npy"])
        meta = json.loads(_read(f, *members["json"]))
        try:
            points = decode_npy(data)
        except ValueError as err:
            raise ShardError(shard.url, f"sample {key}: points.npy: {err}") from None
        parts = None
        if "parts.npy" in members:
            parts = self._parts(shard, key, _read(f, *members["parts.npy"]), len(points))
        return Sample(key, points, meta, parts)

    @staticmethod
    def _parts(shard: ShardInfo, key: str, data: bytearray, num_points: int) -> np.ndarray:
        """A sample's per-point parts: one integer per point, or ShardError naming the sample."""
        try:
            parts = decode_npy(data)
        except ValueError as err:
            raise ShardError(shard.url, f"sample {key}: parts.npy: {err}") from None
        if parts.ndim != 1 or parts.dtype.kind not in "iu" or len(parts) != num_points:
            raise ShardError(shard.url, f"sample {key}: parts.npy is {parts.dtype} {parts.shape}, "
                                        f"expected integers ({num_points},)")
        return parts

    # -- shard files ------------------------------------------------------------------------------

    def _file(self, path: str) -> BinaryIO:
        f = self._files.get(path)
        if f is None:
            f = self._files[path] = open(path, "rb")  # noqa: SIM115 (closed by _close_file or close)
            if len(self._files) > OPEN_FILES:
                self._close_file(next(iter(self._files)))
        else:
            self._files.move_to_end(path)
        return f

    def _close_file(self, path: str) -> None:
        f = self._files.pop(path, None)
        if f is not None:
            f.close()

    def _index(self, shard: ShardInfo) -> list[tuple[str, dict[str, tuple[int, int]]]]:
        index = self._indices.get(shard.url)
        if index is None:
            index = index_tar(self._local_path(shard), shard.url)
            if len(index) != shard.nsamples:
                raise ShardError(shard.url, f"holds {len(index)} samples, the manifest says {shard.nsamples}")
            self._indices[shard.url] = index
        return index

    def _local_path(self, shard: ShardInfo) -> str:
        fs, path = filesystem_for(shard.url, self.storage_options)
        if isinstance(fs, LocalFileSystem):
            if shard.url not in self._indices:
                if not os.path.exists(path):
                    raise ShardError(shard.url, "missing")
                self._verify(shard, path)
            return path
        if shard.url in self._cached:
            self._cached.move_to_end(shard.url)
            return self._cached[shard.url][0]
        local = self._download(fs, path, shard)
        self._verify(shard, local)
        self._cached[shard.url] = (local, os.path.getsize(local))
        self._evict()
        return local

    def _verify(self, shard: ShardInfo, path: str) -> None:
        size = os.path.getsize(path)
        if shard.filesize is not None and size != shard.filesize:
            raise ShardError(shard.url, f"size {size} bytes, the manifest says {shard.filesize}")
        if self.policy.verify and shard.sha256 and _sha256(path) != shard.sha256:
            raise ShardError(shard.url, "sha256 differs from the manifest (corrupt or replaced shard)")

    def _download(self, fs: fsspec.AbstractFileSystem, path: str, shard: ShardInfo) -> str:
        if self._cache_dir is None:
            self._cache_dir = tempfile.mkdtemp(prefix="asymdsd-shards-")
        os.makedirs(self._cache_dir, exist_ok=True)
        local = os.path.join(self._cache_dir, hashlib.sha1(shard.url.encode()).hexdigest() + ".tar")
        delay = self.policy.backoff_s
        for attempt in itertools.count():
            try:
                fs.get_file(path, local + ".part")
                os.replace(local + ".part", local)
                return local
            except FileNotFoundError:
                raise ShardError(shard.url, "missing") from None
            except Exception as err:  # network and service errors: retried with backoff
                if attempt >= self.policy.retries:
                    raise ShardError(shard.url, f"unreadable after {attempt + 1} attempts: {err}") from None
                self.retries_used += 1
                time.sleep(delay)
                delay *= 2

    def _evict(self) -> None:
        total = sum(size for _, size in self._cached.values())
        while total > self.policy.cache_bytes and len(self._cached) > 1:
            url, (path, size) = self._cached.popitem(last=False)
            self._indices.pop(url, None)
            self._close_file(path)
            os.remove(path)
            total -= size

    def close(self) -> None:
        for path in list(self._files):
            self._close_file(path)
        if self._cache_dir is not None and self.policy.cache_dir is None:
            shutil.rmtree(self._cache_dir, ignore_errors=True)


def _read(f, offset: int, size: int) -> bytearray:
    """`size` bytes at `offset`, in a fresh writable buffer (arrays decoded from it are writable views)."""
    buffer = bytearray(size)
    f.seek(offset)
    if f.readinto(buffer) != size:
        raise EOFError(f"member at byte {offset} ends early")
    return buffer


@lru_cache(maxsize=64)
def _npy_header(header: bytes) -> tuple[np.dtype, tuple[int, ...], bool]:
    """(dtype, shape, Fortran order) of a `.npy` preamble (magic and header), parsed by numpy's safe parser.

    Every cloud of one dataset has the same preamble, so the parse (a `literal_eval`, about as slow as the
    rest of the decode) runs once per distinct header.
    """
    fp = io.BytesIO(header)
    version = npy_format.read_magic(fp)
    read = {(1, 0): npy_format.read_array_header_1_0, (2, 0): npy_format.read_array_header_2_0}.get(version)
    if read is None:
        raise ValueError(f"unsupported .npy format version {version[0]}.{version[1]}")
    shape, fortran_order, dtype = read(fp)
    if dtype.hasobject:
        raise ValueError(f"dtype {dtype} holds Python objects, which would need pickles (refused)")
    return dtype, shape, fortran_order


def decode_npy(data: bytes | bytearray) -> np.ndarray:
    """The array stored in `.npy` bytes, as a view of `data` (no copy; writable if `data` is a bytearray).

    Same checks as `np.load(..., allow_pickle=False)`: no object dtypes, and the data must hold the whole
    array. Raises ValueError naming what is wrong.
    """
    if len(data) < 10 or bytes(data[:6]) != npy_format.MAGIC_PREFIX:
        raise ValueError("not a .npy file (bad magic)")
    length_bytes = 2 if data[6] == 1 else 4  # format 1.0: 2-byte header length; 2.0 and 3.0: 4 bytes
    offset = 8 + length_bytes + int.from_bytes(data[8 : 8 + length_bytes], "little")
    dtype, shape, fortran_order = _npy_header(bytes(data[:offset]))
    count = math.prod(shape)
    if len(data) < offset + count * dtype.itemsize:
        raise ValueError(f"truncated: {len(data) - offset} data bytes for shape {shape} of {dtype}")
    flat = np.frombuffer(data, dtype, count=count, offset=offset)
    return flat.reshape(shape[::-1]).T if fortran_order else flat.reshape(shape)
