"""`gso`: Google Scanned Objects, read from the per-object zips in place.

Native layout: the directory the Gazebo Fuel collection downloads into, one zip per object:
  <ObjectName>.zip
    meshes/model.obj (+ model.mtl)      the scanned mesh (the only file used)
    materials/textures/texture.png, thumbnails/*.jpg, metadata.pbtxt, model.config, model.sdf
Each zip is its own container; id = zip stem. Listing reads each zip's central directory, not its
data: that rejects member names escaping the zip (the listing fails) and skips zips without
`meshes/model.obj`, which are not scanned objects. A zip too damaged to open is still listed, so that
it is counted as a failed input with its reason. Files other than top-level zips are ignored. Z-up.
Not supported: a zip or tar holding the object zips (extract it to a directory first), and object
folders already extracted from their zips.
No options.
"""

from __future__ import annotations

import posixpath
import zipfile
from collections.abc import Iterator

from sharding.containers import DirContainer, open_container
from sharding.meshio import suffix
from sharding.records import InputRef
from sharding.sources import register
from sharding.sources.base import SourceReader

MESH_MEMBER = "meshes/model.obj"


@register
class GSOReader(SourceReader):
    kind = "gso"

    def list_inputs(self) -> Iterator[InputRef]:
        root = self.container()
        if not isinstance(root, DirContainer):
            raise ValueError(
                f"source gso: path must be the directory of per-object zips, got {self.spec.path!r} "
                "(an archive holding those zips is not supported: extract it first)"
            )
        entries = root.fs.ls(root.root, detail=True)
        names = sorted(posixpath.basename(e["name"]) for e in entries if e["type"] == "file")
        for name in names:
            if suffix(name) != ".zip":
                continue
            uri = posixpath.join(self.spec.path, name)
            try:
                with open_container(uri, self.spec.storage_options) as obj:
                    # a set, not `in` on the stream: every name is checked, not just those up to the mesh
                    is_object = MESH_MEMBER in set(obj.members())
            except zipfile.BadZipFile:
                is_object = True
            if is_object:
                yield self.ref(MESH_MEMBER, name[: -len(".zip")], container=uri)
