"""`s3dis`: S3DIS object instances, one per annotation file, read from the published zip in place.

Native layout (`Stanford3dDataset_v1.2_Aligned_Version.zip`, the non-aligned `Stanford3dDataset_v1.2.zip`
the reference builder reads, or either extracted):
  <top>/Area_<n>/<room>/Annotations/<class>_<i>.txt      one instance; lines `x y z r g b`
Room-level point files (`<room>/<room>.txt`), alignment angles, macOS copies and everything else are
ignored. id = `Area_<n>_<room>_<class>_<i>`, label = category = class. Z-up. Only xyz is kept; the
reference's random subsampling to 16,384 points is left to the sampler.
Instances with fewer than 2,048 points are dropped by the reference; here they fail decoding with
stage "filter", so the sharder counts them as failures with that reason.
The real data has a stray byte inside one line (Area_5/hallway_6/Annotations/ceiling_1.txt in the
aligned version, Area_5/office_19 in the other): unparseable lines are skipped, and a file fails only
when more than 0.1% of its lines (at least one) are bad.
Options:
  areas ([1, 2, 3, 4, 5, 6]): the areas to list.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Iterator

import numpy as np

from sharding.containers import Container
from sharding.records import InputRef, Loaded, PointData, ShapeError
from sharding.sources import register
from sharding.sources.base import SourceReader, SourceSpec

AREAS = (1, 2, 3, 4, 5, 6)
AREA_DIR = re.compile(r"Area_(\d+)")
INSTANCE_FILE = re.compile(r"(?P<cls>[A-Za-z]+)_(?P<i>\d+)\.txt")
COLUMNS = 6  # x y z r g b
MIN_POINTS = 2048
MAX_BAD_LINE_FRACTION = 1e-3


@register
class S3DISReader(SourceReader):
    kind = "s3dis"
    options = {"areas": list(AREAS)}

    def __init__(self, spec: SourceSpec) -> None:
        super().__init__(spec)
        self.areas = set(self.subset_option("areas", AREAS))

    def list_inputs(self) -> Iterator[InputRef]:
        for member in self.container().members():
            parts = member.split("/")
            if len(parts) < 4 or parts[-2] != "Annotations":
                continue
            area = AREA_DIR.fullmatch(parts[-4])
            instance = INSTANCE_FILE.fullmatch(parts[-1])
            if area is None or instance is None or int(area[1]) not in self.areas:
                continue
            uid = f"{parts[-4]}_{parts[-3]}_{instance['cls']}_{instance['i']}"
            yield self.ref(member, uid, label=instance["cls"], category=instance["cls"])

    def decode(self, ref: InputRef, data: bytes, container: Container) -> Loaded:
        points = parse_xyz(data, ref.member)
        if len(points) < MIN_POINTS:
            raise ShapeError("filter", f"{len(points)} points < {MIN_POINTS}: dropped, as in the reference")
        return Loaded(PointData(points), hashlib.sha256(data).hexdigest(), self.y_up)


def parse_xyz(data: bytes, name: str) -> np.ndarray:
    """The xyz of `x y z r g b` lines: numpy's fast parser, or line by line when some line is malformed."""
    try:
        table = np.loadtxt(io.BytesIO(data), dtype=np.float64, ndmin=2)
        if table.shape[1] == COLUMNS:
            return table[:, :3]
    except ValueError:
        pass
    rows: list[list[float]] = []
    bad = 0
    for line in data.splitlines():
        fields = line.split()
        if not fields:
            continue
        try:
            values = [float(f) for f in fields]
        except ValueError:
            values = []
        if len(values) == COLUMNS:
            rows.append(values[:3])
        else:
            bad += 1
    total = len(rows) + bad
    if bad > max(1.0, MAX_BAD_LINE_FRACTION * total):
        raise ShapeError("decode", f"{name}: {bad} of {total} lines are not 'x y z r g b'")
    return np.asarray(rows, dtype=np.float64).reshape(-1, 3)
