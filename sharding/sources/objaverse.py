"""`objaverse`: Objaverse 1.0 as downloaded from the `allenai/objaverse` Hugging Face dataset.

Layout: `hf-objaverse-v1/glbs/<000-NNN>/<uid>.glb` (the `objaverse` package's cache, or a snapshot
of the dataset repository), as a directory or an archive. Every `.glb` directly inside a chunk
folder of `glbs/` is one input, its id the file stem; the metadata, `object-paths.json.gz` and
anything else are not inputs. Objaverse has no labels; the LVIS annotation subset (~46K objects)
can supply them. Scenes are flattened into one mesh when decoding. The assets are Y-up (glTF).
Options:
  lvis_annotations (None): path or URL of the LVIS annotation file ({category: [uid, ...]}, as
    `lvis-annotations.json.gz` or uncompressed); the uids it lists get their category as label
    and category, the others none.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Iterator

import fsspec

from sharding.records import InputRef
from sharding.remote import remote_options
from sharding.sources import register
from sharding.sources.base import SourceReader, SourceSpec


@register
class ObjaverseReader(SourceReader):
    kind = "objaverse"
    y_up = True
    options = {"lvis_annotations": None}

    def __init__(self, spec: SourceSpec) -> None:
        super().__init__(spec)
        path = self.opts["lvis_annotations"]
        if path is not None and (not isinstance(path, str) or not path):
            raise ValueError(
                f"source objaverse: option lvis_annotations must be a path or None, got {path!r}"
            )

    def list_inputs(self) -> Iterator[InputRef]:
        categories = self._lvis_categories()
        for member in self.container().members():
            parts = member.split("/")
            if len(parts) < 3 or parts[-3] != "glbs" or not member.lower().endswith(".glb"):
                continue
            uid = posixpath.splitext(parts[-1])[0]
            category = categories.get(uid)
            yield self.ref(member, uid, label=category, category=category)

    def _lvis_categories(self) -> dict[str, str]:
        """uid -> LVIS category; empty without the option. A uid listed twice keeps its first category."""
        path = self.opts["lvis_annotations"]
        if path is None:
            return {}
        with fsspec.open(path, "rt", compression="infer", **remote_options(path, self.spec.storage_options)) as f:
            annotations = json.load(f)
        if not isinstance(annotations, dict) or not all(isinstance(u, list) for u in annotations.values()):
            raise ValueError(f"source objaverse: {path} is not an LVIS annotation file {{category: [uid]}}")
        categories: dict[str, str] = {}
        for category, uids in annotations.items():
            for uid in uids:
                categories.setdefault(str(uid), str(category))
        return categories
