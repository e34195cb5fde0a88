"""Sharding test inputs: corpora with good and hostile inputs."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import trimesh


BAD_INPUTS = {
    # name -> (bytes, expected stage)
    "truncated.obj": (b"v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\nf 1 2 9\nv 0 0", "decode"),
    "empty.obj": (b"# nothing here\n", "decode"),
    "nan.obj": (b"v nan 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n", "validate"),
    "flat.obj": (b"v 0 0 0\nv 1 0 0\nv 2 0 0\nf 1 2 3\nf 1 3 2\n", "validate"),
    "garbage.ply": (os.urandom(3000), "decode"),
    "garbage.glb": (b"glTF" + os.urandom(500), "decode"),
}


def write_mesh_dir(root: Path, good: int = 4, bad: bool = True) -> Path:
    """A `generic` tree: good meshes in class folders, plus every hostile input in BAD_INPUTS."""
    root.mkdir(parents=True, exist_ok=True)
    makers = [trimesh.creation.box, lambda: trimesh.creation.icosphere(2), lambda: trimesh.creation.cylinder(0.5, 2)]
    for i in range(good):
        folder = root / f"class{i % 2}"
        folder.mkdir(exist_ok=True)
        (folder / f"mesh_{i}.obj").write_text(makers[i % len(makers)]().export(file_type="obj"))
    if bad:
        (root / "broken").mkdir(exist_ok=True)
        for name, (data, _) in BAD_INPUTS.items():
            (root / "broken" / name).write_bytes(data)
    return root


def write_escaping_zip(path: Path) -> Path:
    """A zip whose second member climbs out of the archive root."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("meshes/ok.obj", trimesh.creation.box().export(file_type="obj"))
        z.writestr(zipfile.ZipInfo("../evil.obj"), trimesh.creation.box().export(file_type="obj"))
    return path
