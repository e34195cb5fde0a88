"""`future3d`: 3D-FUTURE furniture models, read from the published zips in place.

Native layouts (the path is one of):
  * a directory holding the part zips `3D-FUTURE-model-part1.zip` .. `-part4.zip` (each zip is its
    own container), or the single `3D-FUTURE-model.zip` of the 3D-FRONT release. Other files there
    (3D-FRONT.zip, 3D-FUTURE-scene.zip, ...) are ignored; keep only one of the two model layouts in it;
  * one of those zips;
  * an extracted tree (a directory without such zips).
Inside, every model is a folder `<top>/<model_id>/` with `normalized_model.obj` (the only file used:
raw_model.obj, model.mtl, textures and images are ignored, as are the macOS `__MACOSX/.../._*` copies
in the zips). `<top>` is `3D-FUTURE-model-part<k>` or `3D-FUTURE-model`; its `model_info.json` (only in
part 1 of the part zips) is a list of {"model_id", "super-category", "category", ...}: label = category
(null becomes "Other", as in the reference), category = super-category. Models missing from it, or
sources without it, get no label. Y-up. No options.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Iterator

from sharding.containers import DirContainer
from sharding.records import InputRef
from sharding.sources import register
from sharding.sources.base import SourceReader

MODEL_FILE = "normalized_model.obj"
MODEL_INFO = "model_info.json"
MODEL_ZIP = re.compile(r"3D-FUTURE-model(-part\d+)?\.zip")
# Folders that hold model_info.json, besides the container's root and the folder named like the zip.
INFO_TOPS = ("3D-FUTURE-model", "3D-FUTURE-model-part1")


@register
class Future3DReader(SourceReader):
    kind = "future3d"
    y_up = True

    def _container_uris(self) -> list[str]:
        """The part zips of a directory, in name order; else the path itself."""
        root = self.container()
        if isinstance(root, DirContainer):
            entries = root.fs.ls(root.root, detail=True)
            names = sorted(posixpath.basename(e["name"]) for e in entries if e["type"] == "file")
            zips = [posixpath.join(self.spec.path, n) for n in names if MODEL_ZIP.fullmatch(n)]
            if zips:
                return zips
        return [self.spec.path]

    def _model_info(self, uris: list[str]) -> dict[str, dict]:
        """model_id -> its model_info.json entry, merged over every container that has the file."""
        info: dict[str, dict] = {}
        for uri in uris:
            container = self.container(uri)
            stem = posixpath.basename(uri.rstrip("/")).removesuffix(".zip")
            candidates = [posixpath.join(top, MODEL_INFO) for top in dict.fromkeys(("", stem, *INFO_TOPS))]
            for _, data in container.read_many(candidates):  # one pass, should the container be a tar
                if isinstance(data, FileNotFoundError):
                    continue
                if isinstance(data, Exception):
                    raise data
                info.update((e["model_id"], e) for e in json.loads(data) if e.get("model_id"))
        return info

    def list_inputs(self) -> Iterator[InputRef]:
        uris = self._container_uris()
        info = self._model_info(uris)
        for uri in uris:
            for member in self.container(uri).members():
                parent = posixpath.dirname(member)
                if posixpath.basename(member) != MODEL_FILE or not parent:
                    continue
                model_id = posixpath.basename(parent)
                entry = info.get(model_id)
                label = (entry.get("category") or "Other") if entry else None
                category = entry.get("super-category") if entry else None
                yield self.ref(member, model_id, container=uri, label=label, category=category)
