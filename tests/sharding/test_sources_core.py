"""ModelNet40, ShapeNetCore, ScanObjectNN and Objaverse readers on tiny copies of their published layouts."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from sharding.containers import UnsafeMemberError
from sharding.layouts import SCANOBJECTNN_CLASSES, SCANOBJECTNN_FILES
from sharding.records import InputRef, Loaded, MeshData, PointData, ShapeError
# The four modules are imported directly, which registers them: make_reader would also import the readers
# of the other sources, which are written separately.
from sharding.sources import (
    READERS,
    SourceReader,
    SourceSpec,
    modelnet40,
    objaverse,
    scanobjectnn,
    shapenetcore,
)
from tests.sharding.tiny_datasets_core import (
    GLUED_UID,
    LVIS,
    SCENE_UID,
    Expected,
    write_zip_with_escaping_member,
    write_modelnet40,
    write_objaverse,
    write_scanobjectnn,
    write_shapenetcore,
)

CORE = {modelnet40: False, shapenetcore: True, scanobjectnn: True, objaverse: True}  # module -> y_up


def reader(kind: str, path: Path, **options: object) -> SourceReader:
    return READERS[kind](SourceSpec(kind=kind, path=str(path), options=options))


def listed(r: SourceReader) -> dict[str, InputRef]:
    refs = list(r.list_inputs())
    assert [x.key for x in r.list_inputs()] == [x.key for x in refs]  # deterministic
    assert len({x.key for x in refs}) == len(refs)
    return {x.key: x for x in refs}


def summary(refs: dict[str, InputRef]) -> dict[str, tuple[str | None, str | None, str]]:
    return {key: (ref.label, ref.category, ref.split) for key, ref in refs.items()}


def expect_listing(expected: dict[str, Expected]) -> dict[str, tuple[str | None, str | None, str]]:
    return {key: (e.label, e.category, e.split) for key, e in expected.items()}


def load_all(r: SourceReader, refs: dict[str, InputRef]) -> dict[str, Loaded]:
    out = {}
    for ref, loaded in r.load(refs.values()):
        assert not isinstance(loaded, Exception), (ref.key, loaded)
        out[ref.key] = loaded
    assert set(out) == set(refs)
    return out


def test_every_core_kind_is_registered_under_its_module_name():
    for module, y_up in CORE.items():
        kind = module.__name__.rsplit(".", 1)[1]
        assert READERS[kind].kind == kind and READERS[kind].__module__ == module.__name__
        assert READERS[kind].y_up is y_up


# ModelNet40 ---------------------------------------------------------------------------------------


def test_modelnet40_lists_and_decodes_the_published_zip(tmp_path):
    path, expected = write_modelnet40(tmp_path)
    r = reader("modelnet40", path)
    refs = listed(r)
    assert summary(refs) == expect_listing(expected)  # README and macOS resource forks are not inputs
    assert refs["modelnet40_chair_0001"].member == "ModelNet40/chair/train/chair_0001.off"
    assert refs["modelnet40_chair_0001"].uid == "chair_0001"
    for key, loaded in load_all(r, refs).items():
        assert isinstance(loaded.geometry, MeshData) and len(loaded.geometry.vertices) == expected[key].count
        assert loaded.y_up is False


def test_modelnet40_splits_option(tmp_path):
    path, expected = write_modelnet40(tmp_path)
    refs = listed(reader("modelnet40", path, splits=["train"]))
    assert summary(refs) == {k: v for k, v in expect_listing(expected).items() if v[2] == "train"}
    for bad in (["val"], [], "train"):
        with pytest.raises(ValueError, match="option splits"):
            reader("modelnet40", path, splits=bad)
    with pytest.raises(ValueError, match="unknown option"):
        reader("modelnet40", path, split=["train"])


def test_modelnet40_glued_off_header_is_read_and_hashed_as_published(tmp_path):
    path, expected = write_modelnet40(tmp_path)
    r = reader("modelnet40", path)
    ref = listed(r)[f"modelnet40_{GLUED_UID}"]
    raw = r.container().read(ref.member)
    assert raw.startswith(b"OFF") and raw[3:4].isdigit()
    [(_, loaded)] = r.load([ref])
    assert isinstance(loaded, Loaded) and isinstance(loaded.geometry, MeshData)
    assert len(loaded.geometry.vertices) == expected[ref.key].count
    assert loaded.raw_sha256 == hashlib.sha256(raw).hexdigest()


# ShapeNetCore -------------------------------------------------------------------------------------


@pytest.mark.parametrize("archive", [True, False], ids=["zip", "extracted"])
def test_shapenetcore_lists_models_only_and_names_synsets(tmp_path, archive):
    path, expected = write_shapenetcore(tmp_path, archive=archive)
    r = reader("shapenetcore", path)
    refs = listed(r)
    assert summary(refs) == expect_listing(expected)  # .mtl, .json, .binvox, textures are not inputs
    assert {ref.category for ref in refs.values()} == {"airplane", "chair"}
    ref = refs["shapenetcore_03001627_1006be65e7bc937e9141f9b58470d646"]
    assert ref.member.endswith("03001627/1006be65e7bc937e9141f9b58470d646/models/model_normalized.obj")
    for key, loaded in load_all(r, refs).items():
        assert isinstance(loaded.geometry, MeshData) and len(loaded.geometry.vertices) == expected[key].count
        assert loaded.y_up is True


def test_shapenetcore_without_taxonomy_has_no_categories(tmp_path):
    path, expected = write_shapenetcore(tmp_path, taxonomy=False)
    refs = listed(reader("shapenetcore", path))
    assert summary(refs) == expect_listing(expected)
    assert {ref.category for ref in refs.values()} == {None}


# ScanObjectNN -------------------------------------------------------------------------------------


def test_scanobjectnn_lists_one_ref_per_row_of_the_training_files(tmp_path):
    path, arrays = write_scanobjectnn(tmp_path)
    refs = listed(reader("scanobjectnn", path))
    want = {}
    for (variant, split), (_, labels) in arrays.items():
        if split == "train":
            for row, label in enumerate(labels):
                name = SCANOBJECTNN_CLASSES[label]
                want[f"scanobjectnn_{variant}_{split}_{row:05d}"] = (name, name, split)
    assert summary(refs) == want
    ref = refs["scanobjectnn_obj_only_train_00002"]
    assert (ref.member, ref.index) == ("h5_files/main_split_nobg/training_objectdataset.h5", 2)
    assert [r.uid for r in refs.values()][:2] == ["obj_bg_train_00000", "obj_bg_train_00001"]


def test_scanobjectnn_variants_and_splits_options(tmp_path):
    path, arrays = write_scanobjectnn(tmp_path, rows=2)
    refs = listed(reader("scanobjectnn", path, variants=["pb_t50_rs", "obj_only"], splits=["test", "train"]))
    # canonical order whatever the order of the options
    assert [r.uid for r in refs.values()] == [
        f"{v}_{s}_{row:05d}" for v in ("obj_only", "pb_t50_rs") for s in ("train", "test") for row in range(2)
    ]
    for ref in refs.values():
        variant = ref.uid.rsplit("_", 2)[0]
        assert ref.member == f"h5_files/{SCANOBJECTNN_FILES[variant, ref.split]}"
    bad_values = (("variants", ["pb_t50_r"]), ("splits", ["val"]), ("variants", []), ("splits", "train"))
    for option, bad in bad_values:
        with pytest.raises(ValueError, match=f"option {option}"):
            reader("scanobjectnn", path, **{option: bad})


def test_scanobjectnn_decodes_each_file_once_and_hashes_the_sample_array(tmp_path, monkeypatch):
    path, arrays = write_scanobjectnn(tmp_path)
    r = reader("scanobjectnn", path, splits=["train", "test"])
    refs = listed(r)
    opened = []
    real_file = scanobjectnn.h5py.File
    monkeypatch.setattr(scanobjectnn.h5py, "File", lambda *a, **k: opened.append(1) or real_file(*a, **k))
    loaded = load_all(r, refs)
    assert len(opened) == len(SCANOBJECTNN_FILES)  # one parse per member, not per row
    for key, ref in refs.items():
        variant = ref.uid.rsplit("_", 2)[0]
        points = arrays[variant, ref.split][0][ref.index]
        geometry = loaded[key].geometry
        assert isinstance(geometry, PointData) and geometry.points.shape == (2048, 3)
        np.testing.assert_array_equal(geometry.points, points)
        assert loaded[key].raw_sha256 == hashlib.sha256(points.astype(np.float32).tobytes()).hexdigest()
        assert loaded[key].y_up is True


def test_scanobjectnn_listing_reads_labels_only(tmp_path):
    path, _ = write_scanobjectnn(tmp_path, without_data=("obj_only", "train"))
    r = reader("scanobjectnn", path)
    refs = listed(r)  # the file without `data` lists fine: only `label` is read
    results = {ref.key: loaded for ref, loaded in r.load(refs.values())}
    broken = {k: v for k, v in results.items() if k.startswith("scanobjectnn_obj_only_")}
    assert len(broken) == 3
    assert all(isinstance(e, ShapeError) and e.stage == "decode" for e in broken.values())
    assert all(isinstance(v, Loaded) for k, v in results.items() if k not in broken)


def test_scanobjectnn_missing_file_is_named(tmp_path):
    path, _ = write_scanobjectnn(tmp_path)
    extracted = tmp_path / "partial"  # an extracted `h5_files/` holding the OBJ_BG training file only
    (extracted / "main_split").mkdir(parents=True)
    with zipfile.ZipFile(path) as z:
        (extracted / "main_split/training_objectdataset.h5").write_bytes(
            z.read("h5_files/main_split/training_objectdataset.h5")
        )
    assert len(listed(reader("scanobjectnn", extracted, variants=["obj_bg"]))) == 3
    with pytest.raises(FileNotFoundError, match="main_split_nobg/training_objectdataset.h5"):
        list(reader("scanobjectnn", extracted).list_inputs())


# Objaverse ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("archive", [None, "tar"], ids=["dir", "tar"])
def test_objaverse_lists_glbs_and_flattens_scenes(tmp_path, archive):
    path, expected, _ = write_objaverse(tmp_path, archive=archive)
    r = reader("objaverse", path)
    refs = listed(r)
    assert summary(refs) == expect_listing(expected)  # metadata, object-paths and previews/ are not inputs
    assert refs[f"objaverse_{SCENE_UID}"].uid == SCENE_UID
    for key, loaded in load_all(r, refs).items():
        assert isinstance(loaded.geometry, MeshData) and len(loaded.geometry.vertices) == expected[key].count
        assert loaded.y_up is True


@pytest.mark.parametrize("compressed", [True, False], ids=["json.gz", "json"])
def test_objaverse_lvis_labels(tmp_path, compressed):
    path, expected, lvis = write_objaverse(tmp_path)
    if not compressed:
        lvis = tmp_path / "lvis.json"
        lvis.write_text(json.dumps(LVIS))
    refs = listed(reader("objaverse", path, lvis_annotations=str(lvis)))
    category = {uid: c for c, uids in LVIS.items() for uid in uids}
    assert summary(refs) == {
        key: (category.get(key.removeprefix("objaverse_")),) * 2 + ("train",) for key in expected
    }
    assert refs[f"objaverse_{SCENE_UID}"].label is None


def test_objaverse_rejects_bad_lvis_option(tmp_path):
    path, _, _ = write_objaverse(tmp_path)
    with pytest.raises(ValueError, match="option lvis_annotations"):
        reader("objaverse", path, lvis_annotations=3)
    not_lvis = tmp_path / "list.json"
    not_lvis.write_text("[1, 2]")
    with pytest.raises(ValueError, match="not an LVIS annotation file"):
        list(reader("objaverse", path, lvis_annotations=str(not_lvis)).list_inputs())


# Hostile archives ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "inside"),
    [
        ("modelnet40", "ModelNet40/chair/train/chair_0001.off"),
        ("shapenetcore", "ShapeNetCore.v2/03001627/1006be65e7bc937e/models/model_normalized.obj"),
        ("scanobjectnn", "h5_files/main_split/training_objectdataset.h5"),
        ("objaverse", "hf-objaverse-v1/glbs/000-000/8476c4170df24cf5bbe6967222d1a42d.glb"),
    ],
)
def test_member_escaping_the_archive_fails_listing(tmp_path, kind, inside):
    path = write_zip_with_escaping_member(tmp_path / f"{kind}.zip", inside)
    with pytest.raises(UnsafeMemberError):
        list(reader(kind, path).list_inputs())
