"""Tiny copies of ModelNet40, ShapeNetCore v2, ScanObjectNN and Objaverse 1.0 in their published layouts.

Each builder writes the dataset the way it is downloaded (same archive name, folders, file names
and side files that are not inputs) and returns what a reader must list: key -> Expected.
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import trimesh

from sharding.layouts import SCANOBJECTNN_FILES
from tests.sharding.archives import write_tree, write_zip


@dataclass(frozen=True)
class Expected:
    label: str | None
    category: str | None
    split: str
    count: int  # vertices of a mesh, points of a cloud


MESHES: tuple[Callable[[], trimesh.Trimesh], ...] = (
    trimesh.creation.box,  # 8 vertices
    lambda: trimesh.creation.icosphere(1),  # 42 vertices
    lambda: trimesh.creation.cylinder(0.5, 1.0, sections=8),  # 18 vertices
)


def _mesh(i: int) -> trimesh.Trimesh:
    return MESHES[i % len(MESHES)]()


def write_zip_with_escaping_member(path: Path, inside: str) -> Path:
    """A zip holding one proper input at `inside` and a member named '../evil.obj'."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(inside, trimesh.creation.box().export(file_type="obj"))
        z.writestr(zipfile.ZipInfo("../evil.obj"), trimesh.creation.box().export(file_type="obj"))
    return path


# ModelNet40 ---------------------------------------------------------------------------------------

MODELNET_CLASSES = ("chair", "flower_pot")
GLUED_UID = "flower_pot_0002"  # written with the published header quirk: 'OFF<nv> <nf> 0' on one line


def write_modelnet40(root: Path) -> tuple[Path, dict[str, Expected]]:
    """`ModelNet40.zip`: ModelNet40/<class>/<train|test>/<class>_<NNNN>.off, 2 meshes per class and split."""
    files: dict[str, bytes] = {}
    expected: dict[str, Expected] = {}
    for c, label in enumerate(MODELNET_CLASSES):
        for n in range(4):
            split = "train" if n < 2 else "test"
            uid = f"{label}_{n + 1:04d}"
            mesh = _mesh(c + n)
            text = mesh.export(file_type="off")
            if uid == GLUED_UID:
                assert text.startswith("OFF\n")
                text = "OFF" + text[4:]
            files[f"ModelNet40/{label}/{split}/{uid}.off"] = text.encode()
            expected[f"modelnet40_{uid}"] = Expected(label, label, split, len(mesh.vertices))
    files["ModelNet40/README.txt"] = b"not an input\n"
    files["__MACOSX/ModelNet40/chair/train/._chair_0001.off"] = b"\x00\x05\x16\x07 resource fork"
    return write_zip(root / "ModelNet40.zip", files), expected


# ShapeNetCore v2 ----------------------------------------------------------------------------------

SHAPENET_TAXONOMY = [
    {"synsetId": "02691156", "name": "airplane,aeroplane,plane", "children": ["02690373"],
     "numInstances": 4045},
    {"synsetId": "03001627", "name": "chair", "children": [], "numInstances": 6778},
]
SHAPENET_MODELS = {
    "02691156": ("10155655850468db78d106ce0a280f87", "1021a0914a7207aff927ed529ad90a11"),
    "03001627": ("1006be65e7bc937e9141f9b58470d646",),
}


def write_shapenetcore(
    root: Path, archive: bool = True, taxonomy: bool = True
) -> tuple[Path, dict[str, Expected]]:
    """`ShapeNetCore.v2.zip` (or the extracted `ShapeNetCore.v2/` folder) with every side file of a model."""
    names = {e["synsetId"]: e["name"].split(",")[0] for e in SHAPENET_TAXONOMY}
    files: dict[str, bytes] = {}
    expected: dict[str, Expected] = {}
    i = 0
    for synset, model_ids in SHAPENET_MODELS.items():
        for model_id in model_ids:
            mesh = _mesh(i)
            i += 1
            obj = trimesh.exchange.obj.export_obj(mesh, include_normals=False, include_texture=False)
            folder = f"ShapeNetCore.v2/{synset}/{model_id}"
            files[f"{folder}/models/model_normalized.obj"] = (
                "mtllib model_normalized.mtl\nusemtl material_0_24\n" + obj
            ).encode()
            files[f"{folder}/models/model_normalized.mtl"] = (
                b"newmtl material_0_24\nKd 0.8 0.8 0.8\nmap_Kd ../images/texture0.jpg\n"
            )
            files[f"{folder}/models/model_normalized.json"] = json.dumps(
                {"id": model_id, "numVertices": len(mesh.vertices)}
            ).encode()
            files[f"{folder}/models/model_normalized.solid.binvox"] = b"#binvox 1\ndim 2 2 2\ndata\n\x00\x08"
            files[f"{folder}/images/texture0.jpg"] = b"\xff\xd8\xff\xe0 not really a jpeg"
            category = names[synset] if taxonomy else None
            key = f"shapenetcore_{synset}_{model_id}"
            expected[key] = Expected(synset, category, "train", len(mesh.vertices))
    if taxonomy:
        files["ShapeNetCore.v2/taxonomy.json"] = json.dumps(SHAPENET_TAXONOMY).encode()
    if archive:
        return write_zip(root / "ShapeNetCore.v2.zip", files), expected
    return write_tree(root, files) / "ShapeNetCore.v2", expected


# ScanObjectNN -------------------------------------------------------------------------------------

# The six benchmark files are sharding.layouts.SCANOBJECTNN_FILES.
# Files of the release that none of the three benchmark variants uses.
SCANOBJECTNN_OTHER = (
    "main_split/training_objectdataset_augmented25rot.h5",
    "split1/training_objectdataset.h5",
)


def _h5(points: np.ndarray | None, labels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        if points is not None:
            f["data"] = points
            f["mask"] = np.full(points.shape[:2], -1, dtype=np.int32)
        f["label"] = labels
    return buf.getvalue()


def write_scanobjectnn(
    root: Path, rows: int = 3, without_data: tuple[str, str] | None = None
) -> tuple[Path, dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]]:
    """`h5_files.zip` with all six benchmark files and two others; returns (variant, split) -> (data, label).

    `without_data` names one file written with `label` only (an input that lists but cannot decode).
    """
    rng = np.random.default_rng(0)
    files: dict[str, bytes] = {}
    arrays: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
    for n, (key, path) in enumerate(SCANOBJECTNN_FILES.items()):
        points = rng.normal(size=(rows, 2048, 3)).astype(np.float32)
        labels = np.array([(n + r * 7) % 15 for r in range(rows)], dtype=np.int64)
        files[f"h5_files/{path}"] = _h5(None if key == without_data else points, labels)
        arrays[key] = (points, labels)
    for path in SCANOBJECTNN_OTHER:
        files[f"h5_files/{path}"] = _h5(np.zeros((1, 2048, 3), np.float32), np.zeros(1, np.int64))
    return write_zip(root / "h5_files.zip", files), arrays


# Objaverse 1.0 ------------------------------------------------------------------------------------

OBJAVERSE_UIDS = {
    "000-000": ("8476c4170df24cf5bbe6967222d1a42d", "8ff7f1f2465347cd8b80c9b206c2781e"),
    "000-001": ("a20f0c8a8b3c4a5b9c2d1e0f11223344",),
}
SCENE_UID = "8ff7f1f2465347cd8b80c9b206c2781e"  # a glTF scene of two meshes, flattened when decoding
LVIS = {"chair": ["8476c4170df24cf5bbe6967222d1a42d"], "mug": ["a20f0c8a8b3c4a5b9c2d1e0f11223344", "absent"]}


def write_objaverse(root: Path, archive: str | None = None) -> tuple[Path, dict[str, Expected], Path]:
    """The `hf-objaverse-v1/` download (or a tar of it); returns (path, expected without LVIS, LVIS file)."""
    files: dict[str, bytes] = {}
    expected: dict[str, Expected] = {}
    paths: dict[str, str] = {}
    for i, (chunk, uids) in enumerate(OBJAVERSE_UIDS.items()):
        for j, uid in enumerate(uids):
            parts = [_mesh(i + j)]
            if uid == SCENE_UID:
                parts.append(trimesh.creation.box().apply_translation([3.0, 0.0, 0.0]))
            paths[uid] = f"glbs/{chunk}/{uid}.glb"
            files[f"hf-objaverse-v1/{paths[uid]}"] = trimesh.Scene(parts).export(file_type="glb")
            expected[f"objaverse_{uid}"] = Expected(None, None, "train", sum(len(p.vertices) for p in parts))
        files[f"hf-objaverse-v1/metadata/{chunk}.json.gz"] = gzip.compress(json.dumps({}).encode())
    files["hf-objaverse-v1/object-paths.json.gz"] = gzip.compress(json.dumps(paths).encode())
    files["hf-objaverse-v1/previews/8476c4170df24cf5bbe6967222d1a42d.glb"] = files[
        "hf-objaverse-v1/glbs/000-000/8476c4170df24cf5bbe6967222d1a42d.glb"
    ]
    lvis = root / "lvis-annotations.json.gz"
    lvis.write_bytes(gzip.compress(json.dumps(LVIS).encode()))
    if archive == "tar":
        path = root / "hf-objaverse-v1.tar"
        with tarfile.open(path, "w") as tar:
            for name, data in files.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        return path, expected, lvis
    return write_tree(root / "download", files) / "hf-objaverse-v1", expected, lvis
