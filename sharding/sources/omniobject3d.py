"""`omniobject3d`: OmniObject3D's released point clouds (HDF5), read in place.

Native layout: the release's `point_clouds/hdf5_files/<N>/` folders, one file per category:
  point_clouds/hdf5_files/16384/<category>_16384.hdf5      dataset "data", shape (objects, 16384, 3)
written by the toolbox's ply2h5 step; the files hold no object ids (rows follow the order in which the
objects were listed). The path is that folder, any folder above it, or a zip or tar of either; files
for other point counts, the ply_files tree and everything else are ignored. One input per row:
member = the file, index = the row, id = `<category>_<row>` (the reference's names),
label = category = the file name without `_<N>.hdf5`. Y-up.
Listing needs every file's row count: from a directory only the HDF5 header is read, from an archive
the whole file. Decoding parses a file once and serves its rows from it (the refs of one file are
decoded together); the raw hash is the sha256 of the row's float32 points.
Options:
  num_points (16384): the released set to read: 1024, 4096 or 16384.
"""

from __future__ import annotations

import hashlib
import io
import posixpath
import re
from collections.abc import Iterable, Iterator

import h5py
import numpy as np

from sharding.containers import Container, DirContainer
from sharding.limits import check_size
from sharding.records import InputRef, Loaded, PointData, ShapeError
from sharding.sources import register
from sharding.sources.base import SourceReader, SourceSpec

FILE_NAME = re.compile(r"(?P<category>.+)_(?P<points>\d+)\.hdf5")
POINT_COUNTS = (1024, 4096, 16384)
DATASET = "data"


@register
class OmniObject3DReader(SourceReader):
    kind = "omniobject3d"
    y_up = True
    options = {"num_points": 16384}

    def __init__(self, spec: SourceSpec) -> None:
        super().__init__(spec)
        if self.opts["num_points"] not in POINT_COUNTS:
            allowed = ", ".join(map(str, POINT_COUNTS))
            got = self.opts["num_points"]
            raise ValueError(f"source omniobject3d: option num_points must be one of {allowed}, got {got!r}")
        self._parsed: tuple[tuple[str, str], np.ndarray] | None = None  # the last file decoded

    def _category(self, member: str) -> str | None:
        match = FILE_NAME.fullmatch(posixpath.basename(member))
        if match is None or int(match["points"]) != self.opts["num_points"]:
            return None
        return match["category"]

    def list_inputs(self) -> Iterator[InputRef]:
        container = self.container()
        categories = {m: c for m in container.members() if (c := self._category(m)) is not None}
        for member, rows in _row_counts(container, categories):
            category = categories[member]
            for row in range(rows):
                yield self.ref(member, f"{category}_{row}", label=category, category=category, index=row)

    def decode(self, ref: InputRef, data: bytes, container: Container) -> Loaded:
        key = (ref.container, ref.member)
        if self._parsed is None or self._parsed[0] != key:
            with h5py.File(io.BytesIO(data), "r") as h5:
                clouds = _clouds(h5, ref.member)
                check_size(clouds.nbytes, self.limits.max_bytes, f"{ref.member}[{DATASET}]")
                self._parsed = (key, np.asarray(clouds[()], dtype=np.float32))
        clouds = self._parsed[1]
        if ref.index is None or not 0 <= ref.index < len(clouds):
            raise ShapeError("decode", f"{ref.member}: no row {ref.index} (the file has {len(clouds)})")
        points = np.ascontiguousarray(clouds[ref.index, :, :3])
        raw_sha256 = hashlib.sha256(points.tobytes()).hexdigest()
        return Loaded(PointData(points.astype(np.float64)), raw_sha256, self.y_up)


def _clouds(h5: h5py.File, member: str) -> h5py.Dataset:
    """The (objects, points, >=3) dataset of a released file."""
    clouds = h5.get(DATASET)
    if not isinstance(clouds, h5py.Dataset) or clouds.ndim != 3 or clouds.shape[2] < 3:
        found = f"shape {clouds.shape}" if isinstance(clouds, h5py.Dataset) else "nothing"
        expected = f"a dataset {DATASET!r} of shape (objects, points, 3)"
        raise ShapeError("decode", f"{member}: expected {expected}, found {found}")
    return clouds


def _row_counts(container: Container, members: Iterable[str]) -> Iterator[tuple[str, int]]:
    """(member, number of objects) per file, reading only the header where the container allows it."""
    if isinstance(container, DirContainer):
        for member in members:
            with container.fs.open(posixpath.join(container.root, member), "rb") as f:
                with h5py.File(f, "r") as h5:
                    rows = len(_clouds(h5, member))
            yield member, rows
        return
    for member, data in container.read_many(members):
        if isinstance(data, Exception):
            raise data
        with h5py.File(io.BytesIO(data), "r") as h5:
            rows = len(_clouds(h5, member))
        yield member, rows
