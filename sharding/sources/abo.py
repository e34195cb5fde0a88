"""`abo`: Amazon Berkeley Objects 3D models, read from `abo-3dmodels.tar` in place.

Native layout (the published archive, or the same tree extracted or zipped):
  3dmodels/original/<X>/<item_id>.glb     one glTF 2.0 binary per product (<X> is a shard folder)
  3dmodels/metadata/3dmodels.csv.gz       (ignored, like every file that is not a .glb)
Every `.glb` is one input whose id is the item id (the file name without `.glb`), as in the reference
builder. The models are Y-up. No label: product types live in the separate `abo-listings.tar`, joined
through the metadata table, which the reference does not use either.
Listing is one sequential pass over the tar (members are streamed, as tars are everywhere here).
No options.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator

from sharding.meshio import suffix
from sharding.records import InputRef
from sharding.sources import register
from sharding.sources.base import SourceReader


@register
class ABOReader(SourceReader):
    kind = "abo"
    y_up = True

    def list_inputs(self) -> Iterator[InputRef]:
        for member in self.container().members():
            if suffix(member) == ".glb":
                yield self.ref(member, posixpath.splitext(posixpath.basename(member))[0])
