"""The output location (local directory or s3://...), with atomic publishing.

A file becomes visible under its final name only when complete: it is first written under
`_tmp/<name>.<token>`, then renamed (local filesystems: an atomic `os.replace`) or copied and the
temporary deleted (object stores have no rename; a server-side copy makes the object appear whole).
Files being built on local disk (the plan, a shard's tar) live in `local_scratch()`: the output's own
`_tmp/` when it is local (publishing is then a rename), else a local folder named by the output URL's hash.
Either way the next run on the same output removes what a killed run left.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from sharding.remote import remote_options


def json_bytes(obj: Any) -> bytes:
    """The bytes every JSON file of a dataset is published as: sorted keys, one-space indent, final newline."""
    return (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode()


class Output:
    """A dataset's directory or URL: files read from it and published into it atomically (created on
    first use unless `create` is False, as for a dataset that is only read)."""

    def __init__(self, url: str, storage_options: dict | None = None, create: bool = True) -> None:
        self.url = url.rstrip("/")
        self.fs, root = fsspec.core.url_to_fs(self.url, **remote_options(self.url, storage_options))
        self.root = root.rstrip("/")
        self.local = isinstance(self.fs, LocalFileSystem)
        if create:
            self.fs.makedirs(self.root, exist_ok=True)

    def path(self, name: str) -> str:
        return posixpath.join(self.root, name)

    def exists(self, name: str) -> bool:
        return self.fs.exists(self.path(name))

    def size(self, name: str) -> int:
        return self.fs.size(self.path(name))

    def read_bytes(self, name: str) -> bytes:
        return self.fs.cat_file(self.path(name))

    def read_json(self, name: str) -> Any:
        with self.fs.open(self.path(name), "r") as f:
            return json.load(f)

    def _tmp(self, name: str) -> str:
        return self.path(f"_tmp/{posixpath.basename(name)}.{uuid.uuid4().hex}")

    def _staging(self, name: str) -> tuple[str, str]:
        tmp, final = self._tmp(name), self.path(name)
        self.fs.makedirs(posixpath.dirname(final), exist_ok=True)
        self.fs.makedirs(posixpath.dirname(tmp), exist_ok=True)
        return tmp, final

    def publish_file(self, local_path: str, name: str) -> None:
        """Move a finished local file to `name` atomically."""
        tmp, final = self._staging(name)
        if self.local and Path(local_path).parent == self.local_scratch():
            os.replace(local_path, final)  # already beside the output: no copy
            return
        self.fs.put_file(local_path, tmp)
        self._commit(tmp, final)

    def publish_bytes(self, data: bytes, name: str) -> None:
        tmp, final = self._staging(name)
        self.fs.pipe_file(tmp, data)
        self._commit(tmp, final)

    def _commit(self, tmp: str, final: str) -> None:
        if self.local:
            os.replace(tmp, final)
        else:
            self.fs.copy(tmp, final)
            self.fs.rm(tmp)

    def publish_json(self, obj: Any, name: str) -> None:
        self.publish_bytes(json_bytes(obj), name)

    def local_scratch(self) -> Path:
        """The local folder for files being built: `_tmp/` of a local output, else a folder in the system
        temporary folder named by the output URL, so that the next run on the same output finds it."""
        if self.local:
            return Path(self.path("_tmp"))
        digest = hashlib.sha256(self.url.encode()).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / f"shard-output-{digest}"

    def scratch_file(self, name: str) -> Path:
        """A fresh local path in `local_scratch()` for a file that will be published as `name`."""
        folder = self.local_scratch()
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{posixpath.basename(name)}.{uuid.uuid4().hex}"

    def plan_dir(self) -> Path:
        """An empty local folder for the plan file, inside `local_scratch()`."""
        folder = self.local_scratch() / "plan"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        return folder

    def clear_tmp(self) -> None:
        """Remove temporaries left by an interrupted run, remote and local."""
        tmp = self.path("_tmp")
        if self.fs.exists(tmp):
            self.fs.rm(tmp, recursive=True)
        shutil.rmtree(self.local_scratch(), ignore_errors=True)
