"""`generic`: any directory or archive of meshes or point clouds.

Every file with a supported suffix becomes one input; its id is the member path, suffix included, so
`chair.obj` and `chair.ply` side by side stay two inputs.
Options:
  label_from_parent (false): use the parent folder's name as the label;
  up ('z'): 'y' for Y-up data, rotated to Z-up like the Y-up datasets.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator

from sharding.meshio import MESH_SUFFIXES, POINT_SUFFIXES, suffix
from sharding.records import InputRef
from sharding.sources import register
from sharding.sources.base import SourceReader, SourceSpec

SUPPORTED = MESH_SUFFIXES + POINT_SUFFIXES


@register
class GenericReader(SourceReader):
    kind = "generic"
    options = {"label_from_parent": False, "up": "z"}

    def __init__(self, spec: SourceSpec) -> None:
        super().__init__(spec)
        if self.opts["up"] not in ("z", "y"):
            raise ValueError(f"source generic: option up must be 'z' or 'y', got {self.opts['up']!r}")
        self.y_up = self.opts["up"] == "y"

    def list_inputs(self) -> Iterator[InputRef]:
        for member in self.container().members():
            if suffix(member) not in SUPPORTED:
                continue
            parent = posixpath.basename(posixpath.dirname(member))
            label = parent if self.opts["label_from_parent"] and parent else None
            yield self.ref(member, member, label=label, category=label)
