"""Write directory trees, zips and tars for fixtures: the datasets' published layouts, and hostile archives."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path


def write_zip(path: Path, files: dict[str, bytes]) -> Path:
    """A zip with explicit folder entries, as `zip -r` writes them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        folders = {name.rsplit("/", i)[0] + "/" for name in files for i in range(1, name.count("/") + 1)}
        for folder in sorted(folders):
            z.writestr(zipfile.ZipInfo(folder), b"")
        for name, data in files.items():
            z.writestr(name, data)
    return path


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def write_zip_bomb(path: Path, size: int, name: str = "bomb.xyz") -> Path:
    """A zip whose one member inflates to `size` zero bytes, written in chunks (the test never holds it)."""
    chunk = bytes(1 << 24)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        with z.open(name, "w", force_zip64=True) as f:
            for start in range(0, size, len(chunk)):
                f.write(chunk[: size - start])
    return path


def write_big_tar_gz(path: Path, size: int, name: str = "big.xyz") -> Path:
    """A .tar.gz with one member of `size` zero bytes, streamed from /dev/zero."""
    with tarfile.open(path, "w:gz", compresslevel=1) as tar, open("/dev/zero", "rb") as zeros:
        info = tarfile.TarInfo(name)
        info.size = size
        tar.addfile(info, zeros)
    return path


def write_tar(path: Path, files: dict[str, bytes], links: dict[str, tuple[bytes, str]] | None = None) -> Path:
    """A tar of `files`, then link members: name -> (tarfile.SYMTYPE or LNKTYPE, target)."""
    with tarfile.open(path, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, (kind, target) in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, target
            tar.addfile(info)
    return path
