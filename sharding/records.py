"""What flows through the sharder: input references, decoded geometry, errors.

An `InputRef` is small and JSON-serialisable: listing produces millions of them, the plan file stores
them, and shard tasks receive them. Geometry is decoded only inside a shard task.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import numpy as np

_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
_QUOTED = re.compile(r"""b?'[^']*'|b?"[^"]*"|`[^`]*`""")


def sanitize_id(uid: str) -> str:
    """A WebDataset-safe key part: letters, digits, '_' and '-' only (no dots, no slashes)."""
    return _KEY_UNSAFE.sub("-", uid).strip("-") or "_"


@dataclass(frozen=True)
class InputRef:
    """One raw input, as listed from a source before anything is decoded."""

    source: str  # source name, the key prefix and the unit of per-source counts
    kind: str  # reader kind (see sharding.sources)
    container: str  # directory, archive or fsspec URL the input lives in
    member: str  # path of the file inside the container ('' when the container is the file)
    uid: str  # id unique within the source
    label: str | None = None
    category: str | None = None
    split: str = "train"
    index: int | None = None  # record index inside a multi-sample file (h5 point-cloud sets)

    @property
    def key(self) -> str:
        return f"{sanitize_id(self.source)}_{sanitize_id(self.uid)}"

    def to_json(self) -> str:
        # vars(), not dataclasses.asdict, which deep-copies every field of millions of refs.
        return json.dumps(vars(self), separators=(",", ":"))

    @staticmethod
    def from_json(line: str) -> InputRef:
        return InputRef(**json.loads(line))


@dataclass
class MeshData:
    """A triangle mesh; generated meshes also say which semantic part each face belongs to.

    File readers leave the parts unset: only sources that know them (the synthetic one) fill them in.
    """

    vertices: np.ndarray  # (V, 3) float64
    faces: np.ndarray  # (F, 3) int64
    face_parts: np.ndarray | None = None  # (F,) integers, each face's index into part_names
    part_names: tuple[str, ...] = ()


@dataclass
class PointData:
    points: np.ndarray  # (N, 3)


Geometry = MeshData | PointData


@dataclass
class Loaded:
    """A decoded input: geometry in the source's native axes, plus the hash of its raw bytes."""

    geometry: Geometry
    raw_sha256: str
    y_up: bool  # rotate to Z-up (new = old[:, (2, 0, 1)]) before storing


class ShapeError(Exception):
    """An input that cannot become a sample. `stage` says where it failed, the message why."""

    def __init__(self, stage: str, reason: str) -> None:
        super().__init__(f"{stage}: {reason}")
        self.stage = stage
        self.reason = reason


def error_text(err: BaseException) -> str:
    """`Type: message` of a decoder's error, first line only, with every quoted part withheld.

    Parsers quote the input they choke on ("could not convert string '...' to float64"); an input's
    content must never reach errors.jsonl or the logs, whatever file a path or link leads to.
    """
    lines = str(err).splitlines()
    return f"{type(err).__name__}: {_QUOTED.sub('...', lines[0] if lines else '')[:300]}"
