"""How published datasets are laid out and oriented: the facts the source readers and evaluation share.

Plain constants, importable without the sharding extra (trimesh, Ray), so evaluation reads the
same files the same way the sharder does.
"""

from __future__ import annotations

# new = old[:, Z_UP_FROM_Y_UP] turns a Y-up cloud Z-up (the reference's permutation for Y-up sources).
Z_UP_FROM_Y_UP = (2, 0, 1)

# ScanObjectNN h5 release (`h5_files.zip`): `h5_files/main_split/` holds OBJ_BG and PB_T50_RS,
# `h5_files/main_split_nobg/` OBJ_ONLY. Each file has `data` (N, 2048, 3) float32 Y-up clouds,
# `label` (N,) int and `mask` (unused).
SCANOBJECTNN_VARIANTS = ("obj_bg", "obj_only", "pb_t50_rs")
SCANOBJECTNN_SPLITS = ("train", "test")
# (variant, split) -> the last two components of its h5 path.
SCANOBJECTNN_FILES = {
    ("obj_bg", "train"): "main_split/training_objectdataset.h5",
    ("obj_bg", "test"): "main_split/test_objectdataset.h5",
    ("obj_only", "train"): "main_split_nobg/training_objectdataset.h5",
    ("obj_only", "test"): "main_split_nobg/test_objectdataset.h5",
    ("pb_t50_rs", "train"): "main_split/training_objectdataset_augmentedrot_scale75.h5",
    ("pb_t50_rs", "test"): "main_split/test_objectdataset_augmentedrot_scale75.h5",
}
# h5 label i is SCANOBJECTNN_CLASSES[i]: the 15 official classes in the release's label order.
SCANOBJECTNN_CLASSES = (
    "bag", "bin", "box", "cabinet", "chair", "desk", "display", "door",
    "shelf", "table", "bed", "pillow", "sink", "sofa", "toilet",
)  # fmt: skip
