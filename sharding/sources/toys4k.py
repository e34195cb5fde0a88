"""`toys4k`: Toys4K object meshes, read from the published `toys4k_obj_files.zip` in place.

Native layout (the zip, or the same tree extracted):
  toys4k_obj_files/<category>/<object>/mesh.obj      e.g. airplane/airplane_010/mesh.obj
Each object folder holds one `mesh.obj` (the release's own point-cloud script reads exactly that path);
every other file is ignored. id = object folder name (already prefixed by its category, so unique),
label = category = the category folder. The leading `toys4k_obj_files/` may be absent (a zip of the
category folders, or the extracted folder given as the path). Y-up. No options.
"""

from __future__ import annotations

from collections.abc import Iterator

from sharding.records import InputRef
from sharding.sources import register
from sharding.sources.base import SourceReader

MESH_FILE = "mesh.obj"


@register
class Toys4KReader(SourceReader):
    kind = "toys4k"
    y_up = True

    def list_inputs(self) -> Iterator[InputRef]:
        for member in self.container().members():
            parts = member.split("/")
            if len(parts) < 3 or parts[-1] != MESH_FILE:
                continue
            category, name = parts[-3], parts[-2]
            yield self.ref(member, name, label=category, category=category)
