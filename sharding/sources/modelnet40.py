"""`modelnet40`: ModelNet40 as published by Princeton (`ModelNet40.zip`), or the same tree extracted.

Layout: `ModelNet40/<class>/<train|test>/<class>_<NNNN>.off`. The class folder is the label and the
category, the split comes from the path, and the id is the file stem (`<class>_<NNNN>`, numbered
across both splits, so it is unique in the source). The meshes are Z-up and are stored as they are.
Some published files glue the counts onto the header line (`OFF490 518 0`), which the OFF reader
accepts (sharding.decoders.off). Files outside this pattern (macOS `._*` resource forks, READMEs) are skipped.
Options:
  splits (["train", "test"]): the splits to list; the pretraining mixture uses ["train"].
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator

from sharding.records import InputRef
from sharding.sources import register
from sharding.sources.base import SourceReader, SourceSpec

SPLITS = ("train", "test")


@register
class ModelNet40Reader(SourceReader):
    kind = "modelnet40"
    options = {"splits": list(SPLITS)}

    def __init__(self, spec: SourceSpec) -> None:
        super().__init__(spec)
        self.splits = frozenset(self.subset_option("splits", SPLITS))

    def list_inputs(self) -> Iterator[InputRef]:
        for member in self.container().members():
            parts = member.split("/")
            if len(parts) < 3 or not member.lower().endswith(".off"):
                continue
            label, split, filename = parts[-3:]
            uid = posixpath.splitext(filename)[0]
            if split in self.splits and uid.startswith(f"{label}_"):
                yield self.ref(member, uid, label=label, category=label, split=split)
