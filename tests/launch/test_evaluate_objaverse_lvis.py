"""Objaverse-LVIS in the official code's zarr v2 layout (`Objaverse.zarr`): one K-shot fold read in
place from a folder or a zip, clouds kept Z-up and capped as read, clear errors naming the file."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from numcodecs import Blosc, Zlib

from launch.evaluation.data import DatasetError, LabelledDataConfig, load_dataset
from launch.evaluation.zarr_v2 import ArrayMeta, read_arrays
from sharding.containers import open_container

CLASSES = ["apple", "bench", "chair"]


def _write_json(path: Path, doc: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))


def write_points(folder: Path, points: np.ndarray, chunk_rows: int, codec) -> None:
    """`points` as a zarr v2 array at `folder`: `.zarray` plus row chunks (the last one padded, as zarr writes)."""
    _write_json(folder / ".zarray", {
        "zarr_format": 2, "shape": list(points.shape), "chunks": [chunk_rows, points.shape[1]], "dtype": "<f4",
        "compressor": codec.get_config(), "fill_value": 0.0, "filters": None, "order": "C"})
    for i, start in enumerate(range(0, len(points), chunk_rows)):
        block = np.zeros((chunk_rows, points.shape[1]), np.float32)
        part = points[start:start + chunk_rows]
        block[: len(part)] = part
        (folder / f"{i}.0").write_bytes(codec.encode(block.tobytes()))


def write_lvis_store(root: Path, shot: int = 2, per_class: int = 3, fold: int = 0, test_group: str = "lvis_test",
                     points: int = 7) -> dict[str, np.ndarray]:
    """A tiny `Objaverse.zarr` as `ObjaverseV2Builder.build` lays it out: items under `1_0/<chunk>/<uid>/points`,
    split groups whose `.zattrs` map item paths to labels. Returns every item's points."""
    rng = np.random.default_rng(0)
    _write_json(root / ".zgroup", {"zarr_format": 2})
    _write_json(root / ".zattrs", {"label_names": {"cloud_label": CLASSES + ["unused"], f"lvis_s{shot}": CLASSES},
                                   "splits": ["1_0", "xl"], "complete": True})
    train, test, clouds = {}, {}, {}
    for label, _ in enumerate(CLASSES):
        for j in range(per_class):
            path = f"1_0/{label:03d}/uid{label}{j}"
            cloud = rng.normal(size=(points + j, 3)).astype(np.float32)
            cloud[:, 2] += 10 * label  # an up axis the test can recognise
            write_points(root / path / "points", cloud, chunk_rows=4, codec=Blosc() if j % 2 else Zlib())
            (train if j < shot else test)[path] = label
            clouds[path] = cloud
    for group, labels in ((f"lvis_train_s{shot}f{fold}", train), (f"{test_group}_s{shot}f{fold}", test)):
        _write_json(root / group / ".zattrs", {"paths": list(labels), f"lvis_s{shot}": labels})
    return clouds


def _cfg(path: Path, **kw) -> LabelledDataConfig:
    return LabelledDataConfig(kind="objaverse_lvis", path=str(path), **{"lvis_shot": 2, **kw})


def test_official_split_is_read_from_a_folder_with_z_up_points(tmp_path):
    clouds = write_lvis_store(tmp_path / "Objaverse.zarr")
    data = load_dataset(_cfg(tmp_path / "Objaverse.zarr"))
    assert data.train.class_names == tuple(CLASSES) and len(data.train) == 6 and len(data.test) == 3
    assert data.info["train_group"] == "lvis_train_s2f0" and data.info["test_group"] == "lvis_test_s2f0"
    for split in (data.train, data.test):
        for key, label, points, n in zip(split.keys, split.labels, split.points, split.num_points):
            assert CLASSES[label] == CLASSES[int(key.split("/")[1])]
            np.testing.assert_array_equal(points[:n], clouds[key])  # two chunks, Blosc and zlib, untouched axes
            assert not points[n:].any()


def test_a_zipped_store_with_the_scripts_val_group_name_and_max_points(tmp_path):
    clouds = write_lvis_store(tmp_path / "Objaverse.zarr", test_group="lvis_val")
    archive = tmp_path / "Objaverse.zarr.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted((tmp_path / "Objaverse.zarr").rglob("*")):
            if f.is_file():
                zf.write(f, f.relative_to(tmp_path).as_posix())  # the folder itself is the archive's top
    data = load_dataset(_cfg(archive, max_points=5))
    assert data.info["test_group"] == "lvis_val_s2f0" and data.test.points.shape[1] == 5
    for key, points in zip(data.test.keys, data.test.points):
        rows = {tuple(r) for r in clouds[key]}
        assert all(tuple(p) in rows for p in points)  # a subset of the cloud's own points


def test_malformed_files_are_named(tmp_path):
    root = tmp_path / "Objaverse.zarr"
    write_lvis_store(root)
    (root / "1_0/001/uid11/points/1.0").write_bytes(b"not blosc")
    with pytest.raises(DatasetError, match=r"1_0/001/uid11/points/1\.0"):
        load_dataset(_cfg(root))
    write_lvis_store(root)
    meta = json.loads((root / "1_0/000/uid00/points/.zarray").read_text())
    (root / "1_0/000/uid00/points/.zarray").write_text(json.dumps({**meta, "filters": [{"id": "pickle"}]}))
    with pytest.raises(DatasetError, match=r"uid00/points/\.zarray.*filters"):
        load_dataset(_cfg(root))
    with pytest.raises(DatasetError, match=r"no group lvis_train_s2f7"):
        load_dataset(_cfg(root, lvis_fold=7))
    with pytest.raises(DatasetError, match=r"label_names\['lvis_s10'\]"):
        load_dataset(_cfg(root, lvis_shot=10))
    _write_json(root / "lvis_test_s2f0" / ".zattrs", {"paths": ["1_0/000/uid02"], "lvis_s2": {"1_0/000/uid02": 3}})
    with pytest.raises(DatasetError, match=r"lvis_test_s2f0/\.zattrs.*uid02"):
        load_dataset(_cfg(root))


def test_object_dtypes_and_foreign_codecs_are_refused_before_any_chunk_is_read(tmp_path):
    for bad in ({"dtype": "|O"}, {"compressor": {"id": "pickle"}}, {"zarr_format": 3}):
        doc = {"zarr_format": 2, "shape": [4, 3], "chunks": [4, 3], "dtype": "<f4", "compressor": None,
               "filters": None, "order": "C", **bad}
        with pytest.raises(ValueError, match="not a readable zarr v2 array"):
            ArrayMeta.parse("a/.zarray", doc)


def test_an_uncompressed_fortran_order_array(tmp_path):
    points = np.arange(12, dtype="<f4").reshape(4, 3)
    _write_json(tmp_path / "a/.zarray", {"zarr_format": 2, "shape": [4, 3], "chunks": [4, 3], "dtype": "<f4",
                                         "compressor": None, "filters": None, "order": "F"})
    (tmp_path / "a/0.0").write_bytes(points.tobytes(order="F"))
    with open_container(str(tmp_path)) as c:
        meta = ArrayMeta.parse("a/.zarray", json.loads(c.read("a/.zarray")))
        [(_, out)] = list(read_arrays(c, [meta]))
    np.testing.assert_array_equal(out, points)


def test_chunks_of_the_wrong_size_and_oversized_arrays_are_refused(tmp_path):
    root = tmp_path / "Objaverse.zarr"
    write_lvis_store(root)
    chunk = root / "1_0/002/uid20/points/0.0"
    chunk.write_bytes(Zlib().encode(np.zeros(5, np.float32).tobytes()))  # 20 bytes, the chunk holds 48
    with pytest.raises(DatasetError, match=r"uid20/points/0\.0: cannot be decompressed with zlib"):
        load_dataset(_cfg(root))
    doc = {"zarr_format": 2, "shape": [1 << 40, 3], "chunks": [4, 3], "dtype": "<f4", "compressor": None,
           "filters": None, "order": "C"}
    with pytest.raises(ValueError, match="over max_bytes"):
        ArrayMeta.parse("a/.zarray", doc)
