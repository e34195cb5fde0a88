"""`generic`: any directory or archive of meshes or point clouds.

Every file with a supported suffix becomes one input; its id is the member path, suffix included, so
`chair.obj` and `chair.ply` side by side stay two inputs. An archive (.zip, .tar, .tar.gz, .tgz) inside
a directory is read like a folder: its files are inputs with ids `<archive path>/<member path>`. An
archive inside an archive is listed as an input that fails with the reason (extract it first).
Options:
  label_from_parent (false): use the parent folder's name as the label (an archive's own root counts as
    the folder that holds the archive);
  up ('z'): 'y' for Y-up data, rotated to Z-up like the Y-up datasets.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator

from sharding.containers import Container, DirContainer, is_archive, open_container
from sharding.meshio import MESH_SUFFIXES, POINT_SUFFIXES, suffix
from sharding.records import InputRef, Loaded, ShapeError
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
        root = self.container()
        for member in root.members():
            if is_archive(member) and isinstance(root, DirContainer):
                yield from self._archive_inputs(member)
            elif is_archive(member) or suffix(member) in SUPPORTED:
                yield self._input(member, member, posixpath.dirname(member))

    def _archive_inputs(self, archive: str) -> Iterator[InputRef]:
        """The inputs of an archive inside the directory, opened and closed here (a tree may hold thousands)."""
        uri = posixpath.join(self.spec.path, archive)
        with open_container(uri, self.spec.storage_options, self.limits.max_bytes) as inner:
            for member in inner.members():
                if is_archive(member) or suffix(member) in SUPPORTED:
                    folder = posixpath.dirname(member) or posixpath.dirname(archive)
                    yield self._input(member, f"{archive}/{member}", folder, uri)

    def _input(self, member: str, uid: str, folder: str, container: str | None = None) -> InputRef:
        parent = posixpath.basename(folder)
        label = parent if self.opts["label_from_parent"] and parent else None
        return self.ref(member, uid, container, label=label, category=label)

    def decode(self, ref: InputRef, data: bytes, container: Container) -> Loaded:
        if is_archive(ref.member):
            raise ShapeError("load", f"{ref.member}: an archive inside an archive is not read: extract it first")
        return super().decode(ref, data, container)
