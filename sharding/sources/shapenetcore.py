"""`shapenetcore`: ShapeNetCore v2 as published (`ShapeNetCore.v2.zip`), or the same tree extracted.

Layout: `ShapeNetCore.v2/<synset_id>/<model_id>/models/model_normalized.obj`, next to the model's
.mtl, .json, binvox files and `images/` textures, which are not inputs (materials are skipped when
decoding: only geometry is sampled). `ShapeNetCore.v2/taxonomy.json` (a list of {"synsetId",
"name", ...}) names the synsets; it is read once, at the start of listing, from the folder that
holds the synset folders. The label is the synset id, the category the first comma-separated word
of its taxonomy name ("airplane,aeroplane,plane" -> "airplane"), or None without a taxonomy. The id
is `<synset_id>_<model_id>`. Everything is one "train" split (AsymDSD pretrains on all models). The
meshes are Y-up.
No options.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Iterator

from sharding.records import InputRef
from sharding.sources import register
from sharding.sources.base import SourceReader

MODEL_FILE = "models/model_normalized.obj"
_SYNSET = re.compile(r"\d{8}")


@register
class ShapeNetCoreReader(SourceReader):
    kind = "shapenetcore"
    y_up = True

    def list_inputs(self) -> Iterator[InputRef]:
        names: dict[str, str] | None = None
        for member in self.container().members():
            parts = member.split("/")
            if len(parts) < 4 or "/".join(parts[-2:]) != MODEL_FILE or not _SYNSET.fullmatch(parts[-4]):
                continue
            if names is None:
                names = self._taxonomy("/".join(parts[:-4]))
            synset, model_id = parts[-4], parts[-3]
            yield self.ref(member, f"{synset}_{model_id}", label=synset, category=names.get(synset))

    def _taxonomy(self, root: str) -> dict[str, str]:
        """synset id -> short name from `<root>/taxonomy.json`; empty when the file is absent."""
        try:
            data = self.container().read(posixpath.join(root, "taxonomy.json"))
        except FileNotFoundError:
            return {}
        entries = json.loads(data)
        if not isinstance(entries, list):
            raise ValueError(f"source shapenetcore: taxonomy.json in {self.spec.path} is not a list")
        return {str(e["synsetId"]): str(e["name"]).split(",")[0].strip() for e in entries}
