"""ShapeNetPart in its published layout (folder, parent folder, zip, tar.gz): the official file lists decide
train/val/test, clouds are turned Z-up, labels become global part ids; and PartSet's own checks."""

from __future__ import annotations

import json
import shutil
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

from launch.evaluation.data import DatasetError
from launch.evaluation.part_data import (
    SHAPENETPART_CATEGORY_PARTS,
    SHAPENETPART_CLASSES,
    SHAPENETPART_PART_NAMES,
    PartSet,
    load_shapenetpart,
)

FOLDER = "shapenetcore_partanno_segmentation_benchmark_v0_normal"
# synset -> (category name as the file writes it, category index, its global part ids)
SYNSETS = {"02691156": ("Airplane", 0, [0, 1, 2, 3]), "02773838": ("Bag", 1, [4, 5]),
           "03797390": ("Mug", 11, [36, 37])}
SHAPES = {"02691156": ["a1", "a2", "a3"], "02773838": ["b1", "b2"], "03797390": ["m1", "m2", "m3"]}
LISTS = {"train": [("02691156", "a2"), ("03797390", "m1"), ("02773838", "b1"), ("02691156", "a1")],
         "val": [("03797390", "m2")],
         "test": [("03797390", "m3"), ("02691156", "a3"), ("02773838", "b2")]}
KNOWN_POINT = (0.125, -0.5, 0.75)  # first point of a1, Y-up as published


def write_layout(parent: Path) -> tuple[Path, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """The published folder under `parent`; returns it and key -> (xyz as written, labels)."""
    root = parent / FOLDER
    rng = np.random.default_rng(7)
    truth = {}
    for synset, shapes in SHAPES.items():
        (root / synset).mkdir(parents=True)
        parts = SYNSETS[synset][2]
        for i, shape in enumerate(shapes):
            n = 6 + 2 * i  # 6, 8, 10 points: clouds of different lengths
            xyz = rng.uniform(-1, 1, (n, 3)).round(6)
            if shape == "a1":
                xyz[0] = KNOWN_POINT
            normals = rng.normal(size=(n, 3)).round(6)
            labels = rng.choice(parts, n)
            rows = np.concatenate([xyz, normals, labels[:, None]], axis=1)
            (root / synset / f"{shape}.txt").write_text("".join(" ".join(f"{v:f}" for v in row) + "\n" for row in rows))
            truth[f"{synset}_{shape}"] = (xyz.astype(np.float32), labels)
    (root / "synsetoffset2category.txt").write_text("".join(f"{name}\t{s}\n" for s, (name, _, _) in SYNSETS.items()))
    (root / "train_test_split").mkdir()
    for split, entries in LISTS.items():
        (root / "train_test_split" / f"shuffled_{split}_file_list.json").write_text(
            json.dumps([f"shape_data/{s}/{shape}" for s, shape in entries]))
    return root, truth


def keys(split: str) -> tuple[str, ...]:
    return tuple(f"{s}_{shape}" for s, shape in LISTS[split])


def as_zip(root: Path, out: Path) -> Path:
    with zipfile.ZipFile(out, "w") as z:
        for f in sorted(root.rglob("*")):
            if f.is_file():
                z.write(f, f.relative_to(root.parent).as_posix())
    return out


def as_tar_gz(root: Path, out: Path) -> Path:
    with tarfile.open(out, "w:gz") as t:
        t.add(root, arcname=root.name)
    return out


@pytest.fixture
def layout(tmp_path):
    return write_layout(tmp_path / "data")


@pytest.mark.parametrize("form", ["folder", "parent", "zip", "tar.gz"])
def test_reads_the_published_layout_as_the_split_files_list_it(layout, tmp_path, form):
    root, truth = layout
    path = {"folder": lambda: root, "parent": lambda: root.parent, "zip": lambda: as_zip(root, tmp_path / "s.zip"),
            "tar.gz": lambda: as_tar_gz(root, tmp_path / "s.tar.gz")}[form]()
    data = load_shapenetpart(str(path))
    assert data.train.keys == keys("train") and data.test.keys == keys("test") and data.val.keys == keys("val")
    assert data.train.name == "shapenetpart/train" and data.info["kind"] == "shapenetpart"
    for split in (data.train, data.test, data.val):
        assert split.class_names == SHAPENETPART_CLASSES and split.category_parts == SHAPENETPART_CATEGORY_PARTS
        for i, key in enumerate(split.keys):
            xyz, labels = truth[key]
            n = len(xyz)
            assert split.num_points[i] == n
            assert split.labels[i] == SYNSETS[key.split("_")[0]][1]
            np.testing.assert_array_equal(split.points[i, :n], xyz[:, [2, 0, 1]])  # Y-up -> Z-up
            np.testing.assert_array_equal(split.parts[i, :n], labels)
            assert (split.parts[i, n:] == -1).all() and (split.points[i, n:] == 0).all()
    a1 = data.train.keys.index("02691156_a1")
    np.testing.assert_array_equal(data.train.points[a1, 0], np.float32([0.75, 0.125, -0.5]))
    assert data.train.points.shape == (4, 8, 3) and data.test.points.shape == (3, 10, 3)  # padded to the longest
    assert data.train.points.dtype == np.float32
    assert data.train.parts.dtype == np.int64 and data.train.labels.tolist() == [0, 11, 1, 0]


def test_categories_and_global_part_ids_follow_the_official_table():
    assert SHAPENETPART_CLASSES == ("airplane", "bag", "cap", "car", "chair", "earphone", "guitar", "knife", "lamp",
                                    "laptop", "motorbike", "mug", "pistol", "rocket", "skateboard", "table")
    expected = [[0, 1, 2, 3], [4, 5], [6, 7], [8, 9, 10, 11], [12, 13, 14, 15], [16, 17, 18], [19, 20, 21], [22, 23],
                [24, 25, 26, 27], [28, 29], [30, 31, 32, 33, 34, 35], [36, 37], [38, 39, 40], [41, 42, 43],
                [44, 45, 46], [47, 48, 49]]
    assert [list(p) for p in SHAPENETPART_CATEGORY_PARTS] == expected
    assert len(SHAPENETPART_PART_NAMES) == 50
    assert SHAPENETPART_PART_NAMES[0] == "airplane/0" and SHAPENETPART_PART_NAMES[35] == "motorbike/5"
    assert SHAPENETPART_PART_NAMES[49] == "table/2"


def test_train_can_take_the_val_list_too(layout):
    root, _ = layout
    data = load_shapenetpart(str(root), splits=("train", "val"))
    assert data.train.keys == keys("train") + keys("val") and data.test.keys == keys("test") and data.val is None
    with pytest.raises(DatasetError, match="train, val"):
        load_shapenetpart(str(root), splits=("train", "test"))


def test_max_points_caps_each_cloud_with_a_seeded_subset_of_its_own_points(layout, tmp_path):
    root, truth = layout
    capped = load_shapenetpart(str(root), max_points=7)
    again = load_shapenetpart(str(as_zip(root, tmp_path / "s.zip")), max_points=7)
    for a, b in ((capped.train, again.train), (capped.test, again.test)):
        np.testing.assert_array_equal(a.points, b.points)
        np.testing.assert_array_equal(a.parts, b.parts)
    reseeded = load_shapenetpart(str(root), max_points=7, seed=1)
    assert not np.array_equal(reseeded.test.points, capped.test.points)
    for split in (capped.train, capped.test, capped.val):
        assert split.points.shape[1] <= 7
        for i, key in enumerate(split.keys):
            xyz, labels = truth[key]
            n = split.num_points[i]
            assert n == min(7, len(xyz))
            full = {tuple(p) + (int(lab),) for p, lab in zip(xyz[:, [2, 0, 1]].tolist(), labels)}
            kept = {tuple(p) + (int(lab),) for p, lab in zip(split.points[i, :n].tolist(), split.parts[i, :n])}
            assert len(kept) == n and kept <= full  # points keep their own labels


def _rewrite(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def test_a_missing_split_file_is_named(layout):
    root, _ = layout
    (root / "train_test_split" / "shuffled_test_file_list.json").unlink()
    with pytest.raises(DatasetError, match="shuffled_test_file_list.json"):
        load_shapenetpart(str(root))


def test_a_missing_category_file_is_named(layout):
    root, _ = layout
    (root / "synsetoffset2category.txt").unlink()
    with pytest.raises(DatasetError, match="synsetoffset2category.txt"):
        load_shapenetpart(str(root))


@pytest.mark.parametrize("form", ["folder", "tar.gz"])
def test_a_listed_shape_that_is_missing_is_named(layout, tmp_path, form):
    root, _ = layout
    (root / "02773838" / "b2.txt").unlink()
    path = root if form == "folder" else as_tar_gz(root, tmp_path / "s.tar.gz")
    with pytest.raises(DatasetError, match=r"02773838/b2\.txt.*shuffled_test_file_list\.json"):
        load_shapenetpart(str(path))


def test_a_line_with_the_wrong_number_of_columns_is_named(layout, tmp_path):
    root, _ = layout
    shape = root / "03797390" / "m2.txt"
    lines = shape.read_text().splitlines()
    lines[3] = " ".join(lines[3].split()[:6])  # label dropped on one line
    shape.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=r"03797390/m2\.txt"):
        load_shapenetpart(str(root))
    with pytest.raises(DatasetError, match=r"03797390/m2\.txt"):
        load_shapenetpart(str(as_zip(root, tmp_path / "s.zip")))
    shape.write_text("".join(" ".join(line.split()[:6]) + "\n" for line in lines))  # every line has 6
    with pytest.raises(DatasetError, match=r"03797390/m2\.txt: 6 columns"):
        load_shapenetpart(str(root))


@pytest.mark.parametrize("label", ["4.000000", "36.500000", "-1.000000"])
def test_a_label_outside_the_category_parts_is_named(layout, label):
    root, _ = layout
    shape = root / "02691156" / "a3.txt"  # airplane: parts 0..3
    lines = shape.read_text().splitlines()
    lines[2] = " ".join(lines[2].split()[:6] + [label])
    shape.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=r"02691156/a3\.txt: label .* not a part of airplane \(0\.\.3\)"):
        load_shapenetpart(str(root))


def test_an_unknown_synset_is_named(layout):
    root, _ = layout
    split = root / "train_test_split" / "shuffled_train_file_list.json"
    _rewrite(split, "shape_data/03797390/m1", "shape_data/99999999/m1")
    with pytest.raises(DatasetError, match=r"shuffled_train_file_list\.json.*unknown synset 99999999"):
        load_shapenetpart(str(root))
    # a synset of ShapeNetPart that the category file does not list is unknown here too
    _rewrite(split, "shape_data/99999999/m1", "shape_data/04379243/m1")
    with pytest.raises(DatasetError, match=r"shuffled_train_file_list\.json.*unknown synset 04379243"):
        load_shapenetpart(str(root))
    _rewrite(root / "synsetoffset2category.txt", "Bag\t02773838", "Bag\t12345678")
    with pytest.raises(DatasetError, match=r"synsetoffset2category\.txt.*unknown synset 12345678"):
        load_shapenetpart(str(root))


def test_the_folder_is_read_in_place_from_an_archive(layout, tmp_path):
    root, _ = layout
    archive = as_tar_gz(root, tmp_path / "s.tar.gz")
    shutil.rmtree(root)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    assert load_shapenetpart(str(archive)).test.keys == keys("test")
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing extracted


# -- PartSet ------------------------------------------------------------------------------------------------

CLASSES = ("mug", "cap")
PART_NAMES = ("mug/body", "mug/handle", "cap/peak", "cap/panel")
CATEGORY_PARTS = ((0, 1), (2, 3))


def small_set(parts_of_second=(2, 3, 3)) -> PartSet:
    clouds = [np.ones((2, 3), np.float32), np.full((3, 3), 2, np.float32)]
    return PartSet.from_clouds("toy", clouds, [np.array([0, 1]), np.array(parts_of_second)], [0, 1], CLASSES,
                               PART_NAMES, CATEGORY_PARTS, ("m", "c"))


def test_from_clouds_pads_points_with_zeros_and_parts_with_minus_one():
    data = small_set()
    assert data.points.shape == (2, 3, 3) and data.num_points.tolist() == [2, 3]
    assert data.parts.tolist() == [[0, 1, -1], [2, 3, 3]]
    assert (data.points[0, 2] == 0).all() and (data.points[1] == 2).all()
    sub = data.subset(np.array([1]), "one")
    assert len(sub) == 1 and sub.keys == ("c",) and sub.name == "one" and sub.parts.tolist() == [[2, 3, 3]]


def test_a_part_outside_the_category_names_the_set_and_sample():
    with pytest.raises(DatasetError, match=r"toy: sample c has part 1 .*one of \[2, 3\]"):
        small_set((2, 1, 3))  # a mug part on a cap
    data = small_set()
    with pytest.raises(DatasetError, match="toy: sample m has part 0 at padding"):
        PartSet("toy", data.points, data.num_points, np.array([[0, 1, 0], [2, 3, 3]]), data.labels, CLASSES,
                PART_NAMES, CATEGORY_PARTS, data.keys)
    with pytest.raises(DatasetError, match="labels must index"):
        PartSet("toy", data.points, data.num_points, data.parts, np.array([0, 2]), CLASSES, PART_NAMES,
                CATEGORY_PARTS)
    with pytest.raises(DatasetError, match="same"):
        PartSet("toy", data.points, data.num_points, data.parts[:, :2], data.labels, CLASSES, PART_NAMES,
                CATEGORY_PARTS)
