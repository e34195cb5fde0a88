"""The abo, future3d, toys4k, gso, omniobject3d and s3dis readers on tiny datasets in their native layouts:
exact listings, every ref decoded to the right geometry, ignored non-inputs, the S3DIS filter and
stray-byte quirk, option checks, and archive members that escape the archive root.

The readers are imported directly, not through make_reader, which imports every built-in reader.
"""

from __future__ import annotations

import hashlib
import inspect
from pathlib import Path

import h5py
import numpy as np
import pytest

from sharding.containers import UnsafeMemberError
from sharding.records import InputRef, Loaded, MeshData, PointData, ShapeError
from sharding.sources.abo import ABOReader
from sharding.sources.base import SourceReader, SourceSpec
from sharding.sources.future3d import Future3DReader
from sharding.sources.gso import GSOReader
from sharding.sources.omniobject3d import OmniObject3DReader
from sharding.sources.s3dis import S3DISReader
from sharding.sources.toys4k import Toys4KReader
from tests.sharding import tiny_datasets_more as tiny

READERS: dict[str, type[SourceReader]] = {
    "abo": ABOReader,
    "future3d": Future3DReader,
    "toys4k": Toys4KReader,
    "gso": GSOReader,
    "omniobject3d": OmniObject3DReader,
    "s3dis": S3DISReader,
}


def make(kind: str, path: Path, **options: object) -> SourceReader:
    return READERS[kind](SourceSpec(kind, str(path), options=options))


def listing(reader: SourceReader) -> list[InputRef]:
    """The refs, checking that listing streams and lists the same refs twice."""
    stream = reader.list_inputs()
    assert inspect.isgenerator(stream)
    refs = list(stream)
    assert refs == list(reader.list_inputs())
    return refs


def load(reader: SourceReader, refs: list[InputRef]) -> dict[str, Loaded | Exception]:
    results = {ref.key: loaded for ref, loaded in reader.load(refs)}
    assert set(results) == {ref.key for ref in refs}
    return results


def summary(refs: list[InputRef]) -> list[tuple[str, str, str, str | None, str | None]]:
    return [(r.container, r.member, r.uid, r.label, r.category) for r in refs]


def assert_meshes(results: dict[str, Loaded | Exception], vertices: dict[str, int], y_up: bool) -> None:
    assert set(results) == set(vertices)
    for key, loaded in results.items():
        assert isinstance(loaded, Loaded), (key, loaded)
        assert isinstance(loaded.geometry, MeshData) and loaded.y_up is y_up
        assert loaded.geometry.vertices.shape == (vertices[key], 3) and len(loaded.geometry.faces) > 0


Y_UP = {"abo": True, "future3d": True, "toys4k": True, "gso": False, "omniobject3d": True, "s3dis": False}


@pytest.mark.parametrize("kind, y_up", sorted(Y_UP.items()))
def test_kinds_and_axes(kind, y_up):
    assert READERS[kind].kind == kind and READERS[kind].__module__ == f"sharding.sources.{kind}"
    assert READERS[kind].y_up is y_up


def test_abo_lists_every_glb_of_the_tar(tmp_path):
    path = tiny.write_abo_tar(tmp_path / "abo-3dmodels.tar")
    reader = make("abo", path)
    refs = listing(reader)
    members = [f"3dmodels/original/{x}/{item}.glb" for item, (x, _) in tiny.ABO_ITEMS.items()]
    assert summary(refs) == [(str(path), m, item, None, None) for m, item in zip(members, tiny.ABO_ITEMS)]
    assert [r.key for r in refs] == [f"abo_{item}" for item in tiny.ABO_ITEMS]
    vertices = {f"abo_{item}": tiny.VERTICES[shape] for item, (_, shape) in tiny.ABO_ITEMS.items()}
    assert_meshes(load(reader, refs), vertices, y_up=True)


def future3d_expected(containers: dict[int, str], top: dict[int, str]) -> list[tuple]:
    """(container, member, uid, label, category) of every model, by part."""
    expected = []
    for part, models in tiny.FUTURE_PARTS.items():
        for mid, meta in models.items():
            label = (meta[1] or "Other") if meta else None
            category = meta[0] if meta else None
            member = f"{top[part]}/{mid}/normalized_model.obj"
            expected.append((containers[part], member, mid, label, category))
    return expected


def test_future3d_lists_each_part_zip_as_its_own_container(tmp_path):
    root = tiny.write_future3d_parts(tmp_path / "3D-FUTURE")
    reader = make("future3d", root)
    refs = listing(reader)
    containers = {p: str(root / f"3D-FUTURE-model-part{p}.zip") for p in tiny.FUTURE_PARTS}
    tops = {p: f"3D-FUTURE-model-part{p}" for p in tiny.FUTURE_PARTS}
    assert summary(refs) == future3d_expected(containers, tops)  # model_info.json of part 1 labels part 2
    vertices = {f"future3d_{mid}": tiny.VERTICES[i % 3] for i, mid in enumerate(tiny.FUTURE_IDS)}
    assert_meshes(load(reader, refs), vertices, y_up=True)


def test_future3d_single_zip_and_extracted_tree(tmp_path):
    zipped, extracted = tiny.write_future3d_single(tmp_path)
    cases = [  # (path, container, folder above the models)
        (zipped, zipped, "3D-FUTURE-model/"),
        (tmp_path, zipped, "3D-FUTURE-model/"),  # a directory holding the zip: the zip, not extracted/
        (extracted, extracted, ""),
        (extracted.parent, extracted.parent, "3D-FUTURE-model/"),
    ]
    for path, container, top in cases:
        reader = make("future3d", path)
        refs = listing(reader)
        containers = dict.fromkeys(tiny.FUTURE_PARTS, str(container))
        expected = future3d_expected(containers, dict.fromkeys(tiny.FUTURE_PARTS, "3D-FUTURE-model"))
        expected = [(c, m.replace("3D-FUTURE-model/", top), *rest) for c, m, *rest in expected]
        assert summary(refs) == expected, path
        assert all(isinstance(loaded, Loaded) for loaded in load(reader, refs).values())


def test_toys4k_lists_one_mesh_per_object_folder(tmp_path):
    path = tiny.write_toys4k_zip(tmp_path / "toys4k_obj_files.zip")
    reader = make("toys4k", path)
    refs = listing(reader)
    assert summary(refs) == [
        (str(path), f"toys4k_obj_files/{category}/{name}/mesh.obj", name, category, category)
        for name, category in tiny.TOYS4K_OBJECTS.items()
    ]
    vertices = {f"toys4k_{name}": tiny.VERTICES[i % 3] for i, name in enumerate(tiny.TOYS4K_OBJECTS)}
    assert_meshes(load(reader, refs), vertices, y_up=True)


def test_gso_lists_each_object_zip_as_its_own_container(tmp_path):
    root = tiny.write_gso_dir(tmp_path / "ScannedObjects")
    reader = make("gso", root)
    refs = listing(reader)  # not_an_object.zip (no meshes/model.obj) and download.log are skipped
    expected = [(str(root / f"{name}.zip"), "meshes/model.obj", name, None, None)
                for name in tiny.GSO_OBJECTS]
    assert summary(refs) == expected
    vertices = {f"gso_{name}": tiny.VERTICES[i % 3] for i, name in enumerate(tiny.GSO_OBJECTS)}
    assert_meshes(load(reader, refs), vertices, y_up=False)


def test_gso_lists_a_damaged_zip_so_that_it_is_counted_as_failed(tmp_path):
    root = tiny.write_gso_dir(tmp_path / "ScannedObjects")
    (root / "Damaged_Download.zip").write_bytes(b"PK\x03\x04 cut short")
    reader = make("gso", root)
    refs = listing(reader)
    assert [r.uid for r in refs] == [*tiny.GSO_OBJECTS, "Damaged_Download"]  # name order
    results = load(reader, refs)
    assert isinstance(results["gso_Damaged_Download"], Exception)
    assert all(isinstance(results[f"gso_{name}"], Loaded) for name in tiny.GSO_OBJECTS)


def test_gso_rejects_an_archive_of_object_zips(tmp_path):
    path = tiny.write_zip(tmp_path / "gso.zip", {"A.zip": b""})
    with pytest.raises(ValueError, match="directory of per-object zips"):
        listing(make("gso", path))


def omni_expected(container: Path, folder: str, num_points: int) -> list[tuple]:
    return [
        (str(container), f"{folder}{category}_{num_points}.hdf5", f"{category}_{row}", category, category)
        for category, count in tiny.OMNI_CATEGORIES.items()
        for row in range(count)
    ]


def test_omniobject3d_lists_one_input_per_row_and_parses_each_file_once(tmp_path, monkeypatch):
    root, _ = tiny.write_omniobject3d(tmp_path)
    reader = make("omniobject3d", root)
    refs = listing(reader)
    assert summary(refs) == omni_expected(root, "point_clouds/hdf5_files/16384/", 16384)
    assert [r.index for r in refs] == [0, 1, 2, 0, 1]
    opened = []
    real_file = h5py.File
    monkeypatch.setattr(h5py, "File", lambda *a, **k: opened.append(a) or real_file(*a, **k))
    results = load(reader, refs)
    assert len(opened) == len(tiny.OMNI_CATEGORIES)  # one parse per file, not per object
    for ref in refs:
        loaded = results[ref.key]
        expected = tiny.omni_clouds(ref.label, 16384)[ref.index].astype(np.float32)
        assert isinstance(loaded.geometry, PointData) and loaded.y_up
        np.testing.assert_array_equal(loaded.geometry.points, expected)
        assert loaded.raw_sha256 == hashlib.sha256(expected.tobytes()).hexdigest()


def test_omniobject3d_reads_a_zip_and_other_point_counts(tmp_path):
    root, zipped = tiny.write_omniobject3d(tmp_path)
    reader = make("omniobject3d", zipped)
    refs = listing(reader)
    assert summary(refs) == omni_expected(zipped, "", 16384)
    assert all(loaded.geometry.points.shape == (16384, 3) for loaded in load(reader, refs).values())
    reader = make("omniobject3d", root, num_points=1024)
    refs = listing(reader)
    assert summary(refs) == omni_expected(root, "point_clouds/hdf5_files/1024/", 1024)
    assert all(loaded.geometry.points.shape == (1024, 3) for loaded in load(reader, refs).values())


def test_omniobject3d_row_out_of_range_fails_that_input(tmp_path):
    root, _ = tiny.write_omniobject3d(tmp_path)
    reader = make("omniobject3d", root)
    ref = listing(reader)[0]
    missing = InputRef(ref.source, ref.kind, ref.container, ref.member, "apple_9", index=9)
    results = load(reader, [ref, missing])
    assert isinstance(results[ref.key], Loaded)
    assert isinstance(results[missing.key], ShapeError) and "no row 9" in results[missing.key].reason


def s3dis_uid(member: str) -> str:
    area, room, _, name = member.removesuffix(".txt").split("/")
    return f"{area}_{room}_{name}"


def test_s3dis_lists_instance_files_of_the_chosen_areas(tmp_path):
    path = tiny.write_s3dis_zip(tmp_path / "Stanford3dDataset_v1.2_Aligned_Version.zip")
    refs = listing(make("s3dis", path))
    expected = []
    for member in tiny.S3DIS_INSTANCES:
        cls = member.split("/")[-1].rsplit("_", 1)[0]
        expected.append((str(path), f"{tiny.S3DIS_TOP}/{member}", s3dis_uid(member), cls, cls))
    assert summary(refs) == expected  # room files, alignment angles, .DS_Store and __MACOSX are skipped
    assert refs[0].key == "s3dis_Area_1_office_1_chair_1"
    chosen = [r.uid for r in listing(make("s3dis", path, areas=[2, 5]))]
    assert chosen == ["Area_2_hallway_1_wall_1", "Area_5_hallway_6_ceiling_1"]


def test_s3dis_filters_small_instances_and_survives_the_stray_byte(tmp_path):
    path = tiny.write_s3dis_zip(tmp_path / "Stanford3dDataset_v1.2_Aligned_Version.zip")
    reader = make("s3dis", path)
    results = load(reader, listing(reader))
    whole = ["chair_1", "table_1", "wall_1"]  # wall_1 has exactly 2048 points: kept
    for member in (m for m in tiny.S3DIS_INSTANCES if m.split("/")[-1].removesuffix(".txt") in whole):
        loaded = results[f"s3dis_{s3dis_uid(member)}"]
        assert isinstance(loaded, Loaded) and not loaded.y_up
        np.testing.assert_array_equal(loaded.geometry.points, tiny.s3dis_points(member))
    small = results["s3dis_Area_1_office_1_clutter_12"]
    assert isinstance(small, ShapeError) and small.stage == "filter" and "40 points < 2048" in small.reason
    ceiling = results["s3dis_Area_5_hallway_6_ceiling_1"]  # one bad line of 3000: skipped
    expected = tiny.s3dis_points("Area_5/hallway_6/Annotations/ceiling_1.txt")
    np.testing.assert_array_equal(ceiling.geometry.points, np.delete(expected, tiny.S3DIS_STRAY_LINE, axis=0))
    broken = results["s3dis_Area_6_copyRoom_1_door_1"]  # 30 bad lines of 2200: too many
    assert isinstance(broken, ShapeError) and broken.stage == "decode"
    assert f"{tiny.S3DIS_BAD_LINES} of 2200 lines" in broken.reason


def test_s3dis_raw_hash_is_the_files(tmp_path):
    path = tiny.write_s3dis_zip(tmp_path / "s3dis.zip")
    reader = make("s3dis", path)
    ref = listing(reader)[0]
    data = tiny.s3dis_text("Area_1/office_1/Annotations/chair_1.txt")
    assert load(reader, [ref])[ref.key].raw_sha256 == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize(
    "kind, options, message",
    [
        ("s3dis", {"areas": [7]}, "option areas must be a non-empty list drawn from \\[1, 2, 3, 4, 5, 6\\]"),
        ("s3dis", {"areas": []}, "option areas"),
        ("s3dis", {"areas": "1"}, "option areas"),
        ("s3dis", {"areas": [True]}, "option areas"),
        ("s3dis", {"area": [1]}, r"unknown option\(s\) \['area'\]; allowed: areas"),
        ("omniobject3d", {"num_points": 2048}, "option num_points must be one of 1024, 4096, 16384"),
        ("gso", {"up": "y"}, r"unknown option\(s\) \['up'\]; allowed: none"),
    ],
)
def test_option_values_are_checked(tmp_path, kind, options, message):
    with pytest.raises(ValueError, match=message):
        make(kind, tmp_path, **options)


@pytest.mark.parametrize("kind", sorted(READERS))
def test_a_member_escaping_the_archive_root_fails_the_listing(tmp_path, kind):
    path = tiny.write_escaping(kind, tmp_path)
    with pytest.raises(UnsafeMemberError, match=r"\.\./evil\.obj"):
        list(make(kind, path).list_inputs())
