"""`scanobjectnn`: the ScanObjectNN h5 release (`h5_files.zip`), or the same tree extracted.

The files of the three benchmark variants are `sharding.layouts.SCANOBJECTNN_FILES`. Every row is one
input: its ref points at the h5 member with `index` = row, its id is `<variant>_<split>_<row:05d>`,
its label and category the class name (`SCANOBJECTNN_CLASSES`, h5 label order). The other splits in
the release (split1..4, other augmentations) are not listed. The clouds are Y-up and are kept as
published (2,048 points, not resampled).

Listing reads each selected file's `label` dataset only. Decoding parses a member's `data` once per
reader and serves its rows from that array; the hash of a sample is the sha256 of its (2048, 3)
float32 C-order bytes, since the member's own bytes are shared by thousands of samples.
Options:
  variants (["obj_bg", "obj_only", "pb_t50_rs"]): which variants to list;
  splits (["train"]): "train" and/or "test" (the pretraining mixture uses the training files).
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator

import h5py
import numpy as np

from sharding.containers import Container
from sharding.layouts import (
    SCANOBJECTNN_CLASSES,
    SCANOBJECTNN_FILES,
    SCANOBJECTNN_SPLITS,
    SCANOBJECTNN_VARIANTS,
)
from sharding.limits import check_size
from sharding.records import InputRef, Loaded, PointData, ShapeError, error_text
from sharding.sources import register
from sharding.sources.base import SourceReader, SourceSpec


def _parse_clouds(member: str, data: bytes, max_bytes: int) -> np.ndarray | ShapeError:
    """The (N, P, 3) `data` array of an h5 file (at most `max_bytes` unpacked), or the error that says why not."""
    try:
        with h5py.File(io.BytesIO(data), "r") as f:
            check_size(f["data"].nbytes, max_bytes, f"{member}[data]")
            clouds = np.asarray(f["data"][()])
    except ShapeError as err:
        return err
    except Exception as err:
        return ShapeError("decode", f"{member}: {error_text(err)}")
    if clouds.ndim != 3 or clouds.shape[2] != 3:
        return ShapeError("decode", f"{member}: data has shape {clouds.shape}, expected (N, P, 3)")
    return clouds


@register
class ScanObjectNNReader(SourceReader):
    kind = "scanobjectnn"
    y_up = True
    options = {"variants": list(SCANOBJECTNN_VARIANTS), "splits": ["train"]}

    def __init__(self, spec: SourceSpec) -> None:
        super().__init__(spec)
        self.variants = self.subset_option("variants", SCANOBJECTNN_VARIANTS)
        self.splits = self.subset_option("splits", SCANOBJECTNN_SPLITS)
        self._cached: tuple[tuple[str, str], np.ndarray | ShapeError] | None = None

    def list_inputs(self) -> Iterator[InputRef]:
        members = self._locate()
        for variant in self.variants:
            for split in self.splits:
                member = members[SCANOBJECTNN_FILES[variant, split]]
                with h5py.File(io.BytesIO(self.container().read(member)), "r") as f:
                    labels = np.asarray(f["label"][()]).reshape(-1).astype(np.int64)
                for row, label in enumerate(labels.tolist()):
                    if not 0 <= label < len(SCANOBJECTNN_CLASSES):
                        raise ValueError(
                            f"source scanobjectnn: {member} row {row}: label {label} is not 0..14"
                        )
                    name = SCANOBJECTNN_CLASSES[label]
                    uid = f"{variant}_{split}_{row:05d}"
                    yield self.ref(member, uid, label=name, category=name, split=split, index=row)

    def _locate(self) -> dict[str, str]:
        """SCANOBJECTNN_FILES path -> container member of each selected file; missing or doubled: an error."""
        wanted = {SCANOBJECTNN_FILES[v, s] for v in self.variants for s in self.splits}
        found: dict[str, str] = {}
        for member in self.container().members():
            tail = "/".join(member.split("/")[-2:])
            if tail in wanted:
                if tail in found:
                    raise ValueError(f"source scanobjectnn: {tail} twice, as {found[tail]} and {member}")
                found[tail] = member
        missing = sorted(wanted - set(found))
        if missing:
            raise FileNotFoundError(f"source scanobjectnn: {self.spec.path} has no {', '.join(missing)}")
        return found

    def decode(self, ref: InputRef, data: bytes, container: Container) -> Loaded:
        clouds = self._clouds(ref, data)
        if ref.index is None or not 0 <= ref.index < len(clouds):
            raise ShapeError("decode", f"{ref.member}: row {ref.index} not in 0..{len(clouds) - 1}")
        points = np.ascontiguousarray(clouds[ref.index], dtype=np.float32)
        raw_sha256 = hashlib.sha256(points.tobytes()).hexdigest()
        return Loaded(PointData(points.astype(np.float64)), raw_sha256, self.y_up)

    def _clouds(self, ref: InputRef, data: bytes) -> np.ndarray:
        """The member's `data` array (or its error), parsed once: a shard's refs share a few large files."""
        key = (ref.container, ref.member)
        if self._cached is None or self._cached[0] != key:
            self._cached = None  # drop the previous member's array before parsing the next one
            self._cached = (key, _parse_clouds(ref.member, data, self.limits.max_bytes))
        clouds = self._cached[1]
        if isinstance(clouds, ShapeError):
            raise ShapeError(clouds.stage, clouds.reason)
        return clouds

    def close(self) -> None:
        self._cached = None
        super().close()
