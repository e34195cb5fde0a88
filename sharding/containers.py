"""Read files from a directory, a .zip, a .tar/.tar.gz or an fsspec URL, in place.

Archives are never extracted to disk. Member names are normalised to relative POSIX paths; a name
that is absolute or climbs out of the archive root ('..') is rejected when listing and when reading.
Tar archives, compressed or not, are read sequentially: `read_many` serves any set of members in
one pass, which is how shard tasks use them.
"""

from __future__ import annotations

import posixpath
import tarfile
import zipfile
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from typing import IO

import fsspec

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")


class UnsafeMemberError(ValueError):
    """An archive member whose name escapes the archive root."""


def safe_member(name: str) -> str:
    """Normalise a member name; raise UnsafeMemberError for absolute or escaping names."""
    norm = posixpath.normpath(name.replace("\\", "/"))
    if name.startswith(("/", "\\")) or norm == ".." or norm.startswith("../") or (len(norm) > 1 and norm[1] == ":"):
        raise UnsafeMemberError(f"archive member escapes the archive root: {name!r}")
    return norm


def is_archive(uri: str) -> bool:
    return uri.lower().endswith(ARCHIVE_SUFFIXES)


class Container(ABC):
    """A read-only collection of files addressed by relative POSIX paths."""

    uri: str

    @abstractmethod
    def members(self) -> Iterator[str]:
        """Every file, streamed in a deterministic order."""

    @abstractmethod
    def read(self, member: str) -> bytes:
        """The bytes of one member."""

    def read_many(self, members: Iterable[str]) -> Iterator[tuple[str, bytes | Exception]]:
        """(member, bytes) for each requested member, or (member, error) if it cannot be read."""
        for m in dict.fromkeys(members):
            try:
                yield m, self.read(m)
            except Exception as err:  # reported per member by the caller
                yield m, err

    def close(self) -> None:
        pass

    def __enter__(self) -> Container:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class DirContainer(Container):
    """A directory on any fsspec filesystem (local path or s3://bucket/prefix)."""

    def __init__(self, uri: str, storage_options: dict | None = None) -> None:
        self.uri = uri
        self.fs, self.root = fsspec.core.url_to_fs(uri, **(storage_options or {}))
        self.root = self.root.rstrip("/")

    def members(self) -> Iterator[str]:
        # walk streams directory by directory; sorting within each keeps the order deterministic.
        for dirpath, dirnames, filenames in self.fs.walk(self.root):
            dirnames.sort()
            rel_dir = posixpath.relpath(dirpath, self.root) if dirpath != self.root else ""
            for name in sorted(filenames):
                yield posixpath.join(rel_dir, name) if rel_dir else name

    def read(self, member: str) -> bytes:
        return self.fs.cat_file(posixpath.join(self.root, safe_member(member)))


class ZipContainer(Container):
    """A zip archive, local or remote; members are read by random access."""

    def __init__(self, uri: str, storage_options: dict | None = None) -> None:
        self.uri = uri
        self._file = fsspec.open(uri, "rb", **(storage_options or {})).open()
        self._zip = zipfile.ZipFile(self._file)
        self._names: dict[str, str] | None = None

    def _index(self) -> dict[str, str]:
        if self._names is None:
            names = {}
            for info in self._zip.infolist():
                if not info.is_dir():
                    names[safe_member(info.filename)] = info.filename
            self._names = names
        return self._names

    def members(self) -> Iterator[str]:
        for info in self._zip.infolist():
            if not info.is_dir():
                yield safe_member(info.filename)

    def read(self, member: str) -> bytes:
        name = self._index().get(safe_member(member))
        if name is None:
            raise FileNotFoundError(f"{member} not in {self.uri}")
        return self._zip.read(name)

    def close(self) -> None:
        self._zip.close()
        self._file.close()


class TarContainer(Container):
    """A tar archive (optionally gzip/bz2/xz-compressed), read front to back in one pass."""

    def __init__(self, uri: str, storage_options: dict | None = None) -> None:
        self.uri = uri
        self._storage_options = storage_options or {}

    def _stream(self) -> Iterator[tuple[tarfile.TarFile, tarfile.TarInfo]]:
        # Random-access mode: in an uncompressed tar each header is reached by seeking over the
        # member data, so listing a 150 GB archive reads only its headers. Compressed tars are
        # decompressed once, front to back.
        with fsspec.open(self.uri, "rb", **self._storage_options) as f:
            with tarfile.open(fileobj=f, mode="r:*") as tar:
                for info in tar:
                    if info.isfile():
                        yield tar, info

    def members(self) -> Iterator[str]:
        for _, info in self._stream():
            yield safe_member(info.name)

    def read(self, member: str) -> bytes:
        for _, data in self.read_many([member]):
            if isinstance(data, Exception):
                raise data
            return data
        raise FileNotFoundError(member)

    def read_many(self, members: Iterable[str]) -> Iterator[tuple[str, bytes | Exception]]:
        wanted = set()
        for m in members:
            wanted.add(safe_member(m))
        for tar, info in self._stream():
            if not wanted:
                return
            try:
                name = safe_member(info.name)
            except UnsafeMemberError:
                continue
            if name in wanted:
                wanted.discard(name)
                f: IO[bytes] | None = tar.extractfile(info)
                yield name, f.read() if f is not None else FileNotFoundError(name)
        for name in sorted(wanted):
            yield name, FileNotFoundError(f"{name} not in {self.uri}")


class FileContainer(Container):
    """A single file (local or fsspec URL); its only member is ''."""

    def __init__(self, uri: str, storage_options: dict | None = None) -> None:
        self.uri = uri
        self._storage_options = storage_options or {}

    def members(self) -> Iterator[str]:
        yield ""

    def read(self, member: str) -> bytes:
        with fsspec.open(self.uri, "rb", **self._storage_options) as f:
            return f.read()


def open_container(uri: str, storage_options: dict | None = None) -> Container:
    """The container for a path or URL: archive by suffix, directory, or single file."""
    lower = uri.lower()
    if lower.endswith(".zip"):
        return ZipContainer(uri, storage_options)
    if lower.endswith((".tar", ".tar.gz", ".tgz")):
        return TarContainer(uri, storage_options)
    fs, path = fsspec.core.url_to_fs(uri, **(storage_options or {}))
    if fs.isdir(path):
        return DirContainer(uri, storage_options)
    if fs.exists(path):
        return FileContainer(uri, storage_options)
    raise FileNotFoundError(f"source path does not exist: {uri}")
