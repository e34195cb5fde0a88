"""Write small directory trees and zips for fixtures in the datasets' published layouts."""

from __future__ import annotations

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
