"""Read files from a directory, a .zip, a .tar/.tar.gz or an fsspec URL, in place.

Archives are never extracted to disk. Member names are normalised to relative POSIX paths; a name
that is absolute or climbs out of the archive root ('..') is rejected when listing and when reading,
and so is a symbolic link in a local directory that leads out of the directory. Tar archives,
compressed or not, are read sequentially: `read_many` serves any set of members in one pass, which is
how shard tasks use them.

Every listed path is read or refused with a reason: link members of an archive and special files
(fifos, devices) are listed, and reading them is a `ShapeError` that says what they are; a folder that
cannot be listed stops the listing. Reads are bounded by `max_bytes` (see sharding.limits).
"""

from __future__ import annotations

import os
import posixpath
import stat
import tarfile
import zipfile
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator

import fsspec
from fsspec.implementations.local import LocalFileSystem

from sharding.limits import Limits, check_size, within_limit
from sharding.records import ShapeError
from sharding.remote import remote_options

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")
NOT_FOLLOWED = "links are not followed"


class UnsafeMemberError(ValueError):
    """An archive member or a link whose path escapes the container's root."""


def safe_member(name: str) -> str:
    """Normalise a member name; raise UnsafeMemberError for absolute or escaping names."""
    norm = posixpath.normpath(name.replace("\\", "/"))
    if name.startswith(("/", "\\")) or norm == ".." or norm.startswith("../") or (len(norm) > 1 and norm[1] == ":"):
        raise UnsafeMemberError(f"archive member escapes the archive root: {name!r}")
    return norm


def is_archive(uri: str) -> bool:
    return uri.lower().endswith(ARCHIVE_SUFFIXES)


def read_file(fs: fsspec.AbstractFileSystem, path: str, name: str, max_bytes: int) -> bytes:
    """A regular file's bytes: its size checked before reading, the read cut at `max_bytes` + 1."""
    info = fs.info(path)
    if info["type"] != "file":
        raise ShapeError("load", f"{name} is not a regular file")
    check_size(info["size"], max_bytes)
    return within_limit(fs.cat_file(path, start=0, end=max_bytes + 1), max_bytes)


class Container(ABC):
    """A read-only collection of files addressed by relative POSIX paths."""

    def __init__(self, uri: str, storage_options: dict | None = None, max_bytes: int = Limits.max_bytes) -> None:
        self.uri = uri
        self.storage_options = remote_options(uri, storage_options)
        self.max_bytes = max_bytes

    @abstractmethod
    def members(self) -> Iterator[str]:
        """Every file, streamed in a deterministic order."""

    @abstractmethod
    def read(self, member: str) -> bytes:
        """The bytes of one member, at most `max_bytes` of them."""

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
    """A directory on any fsspec filesystem (local path or s3://bucket/prefix).

    On a local disk, a symbolic link that leads out of the directory stops the listing and cannot be
    read; a link to a folder inside it is not descended (its files are listed under their own paths).
    """

    def __init__(self, uri: str, storage_options: dict | None = None, max_bytes: int = Limits.max_bytes) -> None:
        super().__init__(uri, storage_options, max_bytes)
        self.fs, root = fsspec.core.url_to_fs(uri, **self.storage_options)
        self.root = root.rstrip("/")
        self._real_root = os.path.realpath(self.root) if isinstance(self.fs, LocalFileSystem) else None

    def members(self) -> Iterator[str]:
        yield from self._walk(self.root, "")

    def _walk(self, path: str, prefix: str) -> Iterator[str]:
        """The files of `path`, sorted, then each sub-folder's in name order; a folder that cannot be listed raises."""
        files, folders = [], []
        for info in self.fs.ls(path, detail=True):
            full = info["name"].rstrip("/")
            if full == path:
                continue
            name = full.rsplit("/", 1)[-1]
            if info.get("islink"):
                self._check_inside(full, prefix + name)
                if not os.path.isdir(full):
                    files.append(name)
            elif info["type"] == "directory":
                folders.append(name)
            else:
                files.append(name)
        for name in sorted(files):
            yield prefix + name
        for name in sorted(folders):
            yield from self._walk(f"{path}/{name}", f"{prefix}{name}/")

    def _check_inside(self, path: str, member: str) -> None:
        """Raise UnsafeMemberError when a link on the way to `path` leads out of the directory."""
        real = os.path.realpath(path)
        if os.path.commonpath([self._real_root, real]) != self._real_root:
            raise UnsafeMemberError(f"symbolic link leaves the source root: {member}")

    def read(self, member: str) -> bytes:
        member = safe_member(member)
        path = posixpath.join(self.root, member)
        if self._real_root is not None:
            self._check_inside(path, member)
        return read_file(self.fs, path, member, self.max_bytes)


class ZipContainer(Container):
    """A zip archive, local or remote; members are read by random access."""

    def __init__(self, uri: str, storage_options: dict | None = None, max_bytes: int = Limits.max_bytes) -> None:
        super().__init__(uri, storage_options, max_bytes)
        self._file = fsspec.open(uri, "rb", **self.storage_options).open()
        self._zip = zipfile.ZipFile(self._file)
        self._infos: dict[str, zipfile.ZipInfo] | None = None

    def _index(self) -> dict[str, zipfile.ZipInfo]:
        if self._infos is None:
            self._infos = {safe_member(info.filename): info for info in self._zip.infolist() if not info.is_dir()}
        return self._infos

    def members(self) -> Iterator[str]:
        for info in self._zip.infolist():
            if not info.is_dir():
                yield safe_member(info.filename)

    def read(self, member: str) -> bytes:
        name = safe_member(member)
        info = self._index().get(name)
        if info is None:
            raise FileNotFoundError(f"{member} not in {self.uri}")
        if stat.S_ISLNK(info.external_attr >> 16):  # stored by `zip --symlinks`: the data is the target path
            raise ShapeError("load", f"{name} is a symbolic link: {NOT_FOLLOWED}")
        check_size(info.file_size, self.max_bytes)
        with self._zip.open(info) as f:
            return within_limit(f.read(self.max_bytes + 1), self.max_bytes)

    def close(self) -> None:
        self._zip.close()
        self._file.close()


class TarContainer(Container):
    """A tar archive (optionally gzip/bz2/xz-compressed), read front to back in one pass."""

    def _stream(self) -> Iterator[tuple[tarfile.TarFile, tarfile.TarInfo]]:
        # Random-access mode: in an uncompressed tar each header is reached by seeking over the
        # member data, so listing a 150 GB archive reads only its headers. Compressed tars are
        # decompressed once, front to back.
        with fsspec.open(self.uri, "rb", **self.storage_options) as f:
            with tarfile.open(fileobj=f, mode="r:*") as tar:
                for info in tar:
                    if not info.isdir():
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
                try:
                    yield name, self._read_member(tar, info, name)
                except ShapeError as err:
                    yield name, err
        for name in sorted(wanted):
            yield name, FileNotFoundError(f"{name} not in {self.uri}")

    def _read_member(self, tar: tarfile.TarFile, info: tarfile.TarInfo, name: str) -> bytes:
        """A regular member's bytes; a link (whose target is read under its own name) or a device is refused."""
        if info.issym() or info.islnk():
            kind = "a symbolic link" if info.issym() else "a hard link"
            raise ShapeError("load", f"{name} is {kind}: {NOT_FOLLOWED}")
        if not info.isfile():
            raise ShapeError("load", f"{name} is not a regular file")
        check_size(info.size, self.max_bytes)
        with tar.extractfile(info) as f:
            return within_limit(f.read(self.max_bytes + 1), self.max_bytes)


class FileContainer(Container):
    """A single file (local or fsspec URL); its only member is ''."""

    def members(self) -> Iterator[str]:
        yield ""

    def read(self, member: str) -> bytes:
        fs, path = fsspec.core.url_to_fs(self.uri, **self.storage_options)
        return read_file(fs, path, self.uri, self.max_bytes)


def open_container(uri: str, storage_options: dict | None = None, max_bytes: int = Limits.max_bytes) -> Container:
    """The container for a path or URL: archive by suffix, directory, or single file."""
    lower = uri.lower()
    if lower.endswith(".zip"):
        return ZipContainer(uri, storage_options, max_bytes)
    if lower.endswith((".tar", ".tar.gz", ".tgz")):
        return TarContainer(uri, storage_options, max_bytes)
    fs, path = fsspec.core.url_to_fs(uri, **remote_options(uri, storage_options))
    if fs.isdir(path):
        return DirContainer(uri, storage_options, max_bytes)
    if fs.exists(path):
        return FileContainer(uri, storage_options, max_bytes)
    raise FileNotFoundError(f"source path does not exist: {uri}")
