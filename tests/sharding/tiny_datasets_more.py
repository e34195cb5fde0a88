"""Tiny datasets in the native published layouts of the abo, future3d, toys4k, gso, omniobject3d and s3dis
readers, with the files a real download holds besides the inputs (metadata, textures, macOS copies), so the
tests also show that those are ignored. Each builder writes under a pytest tmp_path and returns the path
to give the reader.
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path

import h5py
import numpy as np
import trimesh

from tests.sharding.archives import write_tree, write_zip

VERTICES = (8, 42, 66)
MTL = b"newmtl material_0\nKd 0.8 0.8 0.8\nmap_Kd texture.png\n"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(64)  # never decoded: materials are skipped


def mesh(i: int) -> trimesh.Trimesh:
    """One of three closed shapes, told apart by their vertex count VERTICES[i % 3]."""
    if i % 3 == 0:
        return trimesh.creation.box()
    return trimesh.creation.icosphere(1) if i % 3 == 1 else trimesh.creation.cylinder(0.5, 2)


def obj_bytes(i: int, mtllib: str | None = None) -> bytes:
    text = mesh(i).export(file_type="obj")
    return (f"mtllib {mtllib}\n{text}" if mtllib else text).encode()


def glb_bytes(i: int) -> bytes:
    return mesh(i).export(file_type="glb")


# ABO: abo-3dmodels.tar -> 3dmodels/original/<X>/<item_id>.glb

ABO_ITEMS = {"B07BW8P2F7": ("7", 0), "B075X4YBR1": ("5", 1), "B07HK5TGQN": ("a", 2)}  # id -> (folder, shape)


def write_abo_tar(path: Path) -> Path:
    csv = b"3dmodel_id,path\nB07BW8P2F7,7/B07BW8P2F7.glb\n"
    files = {f"3dmodels/original/{x}/{item}.glb": glb_bytes(i) for item, (x, i) in ABO_ITEMS.items()}
    files["3dmodels/metadata/3dmodels.csv.gz"] = gzip.compress(csv)
    files["README.md"] = b"# Amazon Berkeley Objects\n"
    with tarfile.open(path, "w") as tar:
        folder = tarfile.TarInfo("3dmodels/original")
        folder.type = tarfile.DIRTYPE
        tar.addfile(folder)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


# 3D-FUTURE: 3D-FUTURE-model-part<k>.zip -> 3D-FUTURE-model-part<k>/<model_id>/normalized_model.obj

FUTURE_PARTS = {  # part -> {model_id: (super-category, category)}; None: not in model_info.json
    1: {
        "0a8f4d2c-1b5e-4c7a-9f3e-2d6b8a1c4e70": ("Sofa", "Three-Seat / Multi-seat Sofa"),
        "1c2d3e4f-5a6b-4c8d-9e0f-a1b2c3d4e5f6": ("Chair", None),
    },
    2: {
        "7e6d5c4b-3a29-4180-9f7e-6d5c4b3a2918": ("Table", "Coffee Table"),
        "9f8e7d6c-5b4a-4392-8170-fedcba987654": None,
    },
}
FUTURE_IDS = [mid for models in FUTURE_PARTS.values() for mid in models]  # a model's shape: its index here


def future3d_model_info() -> bytes:
    entries = [
        {"model_id": mid, "super-category": meta[0], "category": meta[1], "style": "Modern", "theme": None}
        for models in FUTURE_PARTS.values()
        for mid, meta in models.items()
        if meta is not None
    ]
    return json.dumps(entries).encode()


def future3d_files(top: str, part: int | None) -> dict[str, bytes]:
    """The files of one part (or, part None, of all models) under the folder `top`."""
    files: dict[str, bytes] = {}
    parts = [part] if part is not None else sorted(FUTURE_PARTS)
    for mid in (mid for p in parts for mid in FUTURE_PARTS[p]):
        i = FUTURE_IDS.index(mid)
        files[f"{top}/{mid}/normalized_model.obj"] = obj_bytes(i, mtllib="model.mtl")
        files[f"{top}/{mid}/raw_model.obj"] = obj_bytes(i + 1)
        files[f"{top}/{mid}/model.mtl"] = MTL
        files[f"{top}/{mid}/texture.png"] = PNG
        files[f"{top}/{mid}/image.jpg"] = b"\xff\xd8\xff\xe0 not really a jpeg"
        files[f"__MACOSX/{top}/{mid}/._normalized_model.obj"] = b"\x00\x05\x16\x07 AppleDouble"
    if part in (None, 1):
        files[f"{top}/model_info.json"] = future3d_model_info()
    return files


def write_future3d_parts(root: Path) -> Path:
    """A download folder: the part zips next to other 3D-FRONT archives and a note."""
    for part in FUTURE_PARTS:
        top = f"3D-FUTURE-model-part{part}"
        write_zip(root / f"{top}.zip", future3d_files(top, part))
    write_zip(root / "3D-FRONT.zip", {"3D-FRONT/scene.json": b"{}"})
    (root / "README.txt").write_text("3D-FUTURE\n")
    return root


def write_future3d_single(root: Path) -> tuple[Path, Path]:
    """The 3D-FRONT release's one `3D-FUTURE-model.zip`, and the same tree extracted."""
    files = future3d_files("3D-FUTURE-model", None)
    extracted = write_tree(root / "extracted", files) / "3D-FUTURE-model"
    return write_zip(root / "3D-FUTURE-model.zip", files), extracted


# Toys4K: toys4k_obj_files.zip -> toys4k_obj_files/<category>/<object>/mesh.obj

TOYS4K_OBJECTS = {  # object -> category
    "airplane_010": "airplane",
    "airplane_011": "airplane",
    "cup_003": "cup",
    "light_bulb_000": "light_bulb",
}


def write_toys4k_zip(path: Path) -> Path:
    files = {}
    for i, (name, category) in enumerate(TOYS4K_OBJECTS.items()):
        files[f"toys4k_obj_files/{category}/{name}/mesh.obj"] = obj_bytes(i)
        files[f"__MACOSX/toys4k_obj_files/{category}/{name}/._mesh.obj"] = b"\x00\x05\x16\x07"
    files["toys4k_obj_files/cup/cup_003/cup_003_attribution.txt"] = b"CC-BY\n"
    files["toys4k_obj_files/metadata.csv"] = b"object,category\n"
    return write_zip(path, files)


# Google Scanned Objects: <dir>/<ObjectName>.zip -> meshes/model.obj (+ materials, thumbnails, sdf)

GSO_OBJECTS = ("11pro_SL_TRX_FG", "Android_Figure_Panda", "BALANCING_CACTUS")


def gso_object_files(i: int) -> dict[str, bytes]:
    return {
        "meshes/model.obj": obj_bytes(i, mtllib="model.mtl"),
        "meshes/model.mtl": MTL.replace(b"texture.png", b"../materials/textures/texture.png"),
        "materials/textures/texture.png": PNG,
        "thumbnails/0.jpg": b"\xff\xd8\xff\xe0",
        "metadata.pbtxt": b'name: "object"\n',
        "model.config": b"<model></model>\n",
        "model.sdf": b"<sdf></sdf>\n",
    }


def write_gso_dir(root: Path) -> Path:
    for i, name in enumerate(GSO_OBJECTS):
        write_zip(root / f"{name}.zip", gso_object_files(i))
    write_zip(root / "not_an_object.zip", {"notes/readme.txt": b"no mesh here\n"})
    (root / "download.log").write_text("Downloading (1) 11pro_SL_TRX_FG\n")
    return root


# OmniObject3D: point_clouds/hdf5_files/<N>/<category>_<N>.hdf5, dataset "data" (objects, N, 3)

OMNI_CATEGORIES = {"apple": 3, "toy_car": 2}  # category -> number of objects


def omni_clouds(category: str, num_points: int) -> np.ndarray:
    seed = sum(map(ord, category)) + num_points
    return np.random.default_rng(seed).normal(size=(OMNI_CATEGORIES[category], num_points, 3))


def omni_hdf5(category: str, num_points: int) -> bytes:
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        f.create_dataset("data", data=omni_clouds(category, num_points))
    return buf.getvalue()


def omniobject3d_files() -> dict[str, bytes]:
    files = {}
    for n in (1024, 16384):
        for category in OMNI_CATEGORIES:
            files[f"point_clouds/hdf5_files/{n}/{category}_{n}.hdf5"] = omni_hdf5(category, n)
    files["point_clouds/ply_files/1024/apple/apple_001/pcd_1024.ply"] = b"ply\nformat ascii 1.0\nend_header\n"
    files["point_clouds/hdf5_files/README.md"] = b"point clouds\n"
    return files


def write_omniobject3d(root: Path) -> tuple[Path, Path]:
    """The release's point_clouds tree, and a zip of its 16384 folder (as the reference builder reads)."""
    files = omniobject3d_files()
    prefix = "point_clouds/hdf5_files/16384/"
    zipped = {name[len(prefix) :]: data for name, data in files.items() if name.startswith(prefix)}
    return write_tree(root / "OmniObject3D", files), write_zip(root / "OmniObject3D.zip", zipped)


# S3DIS: Stanford3dDataset_v1.2_Aligned_Version/Area_<n>/<room>/Annotations/<class>_<i>.txt

S3DIS_TOP = "Stanford3dDataset_v1.2_Aligned_Version"
S3DIS_INSTANCES = {  # member under S3DIS_TOP -> number of points
    "Area_1/office_1/Annotations/chair_1.txt": 2100,
    "Area_1/office_1/Annotations/table_1.txt": 2500,
    "Area_1/office_1/Annotations/clutter_12.txt": 40,  # < 2048: filtered
    "Area_2/hallway_1/Annotations/wall_1.txt": 2048,
    "Area_5/hallway_6/Annotations/ceiling_1.txt": 3000,  # has the stray byte on one line
    "Area_6/copyRoom_1/Annotations/door_1.txt": 2200,  # has many bad lines: fails
}
S3DIS_STRAY_LINE = 1800  # ceiling_1.txt line with a stray byte in its colour (line 180389 of the real one)
S3DIS_BAD_LINES = 30  # unparseable lines of door_1.txt


def s3dis_points(member: str) -> np.ndarray:
    rng = np.random.default_rng(len(member))
    return np.round(rng.uniform(0.0, 5.0, size=(S3DIS_INSTANCES[member], 3)), 3)


def s3dis_text(member: str) -> bytes:
    points = s3dis_points(member)
    lines = [f"{x:.3f} {y:.3f} {z:.3f} {150 + k % 50} 151 160" for k, (x, y, z) in enumerate(points)]
    if member.startswith("Area_5/hallway_6/"):
        x, y, z = points[S3DIS_STRAY_LINE]
        lines[S3DIS_STRAY_LINE] = f"{x:.3f} {y:.3f} {z:.3f} 185\x10187 182"
    if member.startswith("Area_6/"):
        lines[:S3DIS_BAD_LINES] = ["12.5 0.3 x7 1 2 3"] * S3DIS_BAD_LINES
    return ("\n".join(lines) + "\n").encode()


def write_s3dis_zip(path: Path) -> Path:
    files = {f"{S3DIS_TOP}/{m}": s3dis_text(m) for m in S3DIS_INSTANCES}
    files[f"{S3DIS_TOP}/Area_1/office_1/office_1.txt"] = s3dis_text("Area_1/office_1/Annotations/chair_1.txt")
    files[f"{S3DIS_TOP}/Area_1/Area_1_alignmentAngle.txt"] = b"## Global alignment angle ##\nOffice_1 0\n"
    files[f"{S3DIS_TOP}/Area_1/office_1/Annotations/.DS_Store"] = b"\x00\x00\x00\x01Bud1"
    files[f"__MACOSX/{S3DIS_TOP}/Area_1/office_1/Annotations/._chair_1.txt"] = b"\x00\x05\x16\x07"
    return write_zip(path, files)


# A zip in each layout with one member named to climb out of the archive root.

EVIL = "../evil.obj"


def write_escaping(kind: str, root: Path) -> Path:
    """The path to give `kind`'s reader: its native layout with an escaping member in one zip."""
    evil = {EVIL: obj_bytes(0)}
    if kind == "abo":
        return write_zip(root / "abo.zip", {"3dmodels/original/7/B07BW8P2F7.glb": glb_bytes(0), **evil})
    if kind == "future3d":
        write_zip(root / "3D-FUTURE-model-part1.zip", {**future3d_files("3D-FUTURE-model-part1", 1), **evil})
        return root
    if kind == "toys4k":
        return write_zip(root / "toys4k.zip", {"toys4k_obj_files/cup/cup_003/mesh.obj": obj_bytes(0), **evil})
    if kind == "gso":
        write_zip(root / "Evil_Object.zip", {**gso_object_files(0), **evil})
        return root
    if kind == "omniobject3d":
        return write_zip(root / "omni.zip", {"apple_16384.hdf5": omni_hdf5("apple", 16384), **evil})
    if kind == "s3dis":
        member = "Area_1/office_1/Annotations/chair_1.txt"
        return write_zip(root / "s3dis.zip", {f"{S3DIS_TOP}/{member}": s3dis_text(member), **evil})
    raise ValueError(kind)
