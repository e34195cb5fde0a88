"""Duplicates and test-set copies: found by `sharding.dedup` in written datasets, reported, and excluded
in the manifest exactly as asked."""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import trimesh
from scipy.spatial.transform import Rotation

from configuration import ConfigError
from pipeline.loader import dataset_shards
from pipeline.manifest import ManifestError, load_manifest
from pipeline.order import EpochOrder
from pipeline.shards import ShardStore
from sharding.dedup.__main__ import main as dedup_main
from sharding.dedup.matching import copies_of_test_shapes, duplicates
from sharding.manifest import parse_document
from sharding.shard_corpus import main as shard_main
from tests.launch.eval_fixtures import write_h5
from tests.sharding.corpora import write_mesh_dir
from tests.sharding.tiny_datasets_core import write_modelnet40

TEST_SET_ERRORS = "scanobjectnn', 'modelnet40_h5', 'shapenetpart', 'objaverse_lvis' or 'shards'"


def shard(tmp_path: Path, name: str, *args: str, points: int = 16384) -> Path:
    out = tmp_path / name
    assert shard_main([*args, "--output", str(out), "--in-process", "--no-progress", "--num-points", str(points),
                       "--shard-size", "4"]) == 0
    return out


def manifest_of(dataset: Path):
    return parse_document((dataset / "manifest.json").read_bytes(), "manifest.json")


def keys_in_tar_order(dataset: Path, url: str) -> list[str]:
    with tarfile.open(dataset / url) as tar:
        return [m.name.split(".")[0] for m in tar.getmembers() if m.name.endswith(".json")]


def excluded_keys(dataset: Path) -> set[str]:
    manifest = manifest_of(dataset)
    return {keys_in_tar_order(dataset, e.url)[i] for e in manifest.shardlist for i in e.excluded}


def chair() -> trimesh.Trimesh:
    return trimesh.util.concatenate([trimesh.creation.box(extents=(1.0, 1.0, 0.1)), trimesh.creation.box(
        extents=(0.1, 1.0, 1.0), transform=trimesh.transformations.translation_matrix((0.45, 0, 0.5)))])


def write_corpus(root: Path) -> Path:
    """A `generic` tree: a chair, the chair turned and scaled (PLY), the chair re-exported (GLB: exact copy),
    a sphere, a torus-like ring and a cone."""
    root.mkdir(parents=True)
    turned = chair()
    turned.apply_transform(np.diag([*([2.5] * 3), 1.0]) @ np.block(
        [[Rotation.from_euler("xyz", (0.4, 1.1, -2.0)).as_matrix(), np.zeros((3, 1))], [np.zeros((1, 3)), 1.0]]))
    (root / "a_chair.obj").write_text(chair().export(file_type="obj"))
    (root / "b_chair_turned.ply").write_bytes(turned.export(file_type="ply"))
    (root / "c_chair_again.glb").write_bytes(chair().export(file_type="glb"))
    (root / "d_sphere.off").write_text(trimesh.creation.icosphere(3).export(file_type="off"))
    (root / "e_ring.stl").write_bytes(trimesh.creation.annulus(0.6, 1.0, 0.2).export(file_type="stl"))
    (root / "f_cone.obj").write_text(trimesh.creation.cone(0.5, 1.5).export(file_type="obj"))
    return root


def test_a_later_sample_copies_the_first_kept_one_and_chains_of_look_alikes_break():
    exact = np.array([b"a", b"b", b"a", b"c", b"d", b"e", b"b"], dtype="S64")
    descriptors = np.array([[0.0], [1.0], [5.0], [1.01], [1.02], [3.0], [3.001]])
    found = duplicates(exact, descriptors, 0.015)
    # 2 is an exact copy of 0 however far its descriptor; 3 copies 1; 4 is near 3 only, which is not kept;
    # 6 is near 5 but an exact copy of 1, and an exact match comes first.
    assert found.other.tolist() == [-1, -1, 0, 1, -1, -1, 1]
    assert found.exact.tolist() == [False, False, True, False, False, False, True]
    np.testing.assert_allclose(found.distance[[2, 3]], [5.0, 0.01])


def test_a_test_shape_is_matched_exactly_first_then_by_the_nearest_descriptor():
    exact = np.array([b"a", b"b", b"c"], dtype="S64")
    descriptors = np.array([[0.0], [1.0], [2.0]])
    test_exact = np.array([b"x", b"y", b"b"], dtype="S64")
    test_descriptors = np.array([[0.004], [0.002], [9.0]])
    found = copies_of_test_shapes(exact, descriptors, test_exact, test_descriptors, 0.01)
    assert found.other.tolist() == [1, 2, -1] and found.exact.tolist() == [False, True, False]


def test_modelnet40_repeats_its_meshes_across_splits_and_the_copies_are_excluded(tmp_path):
    path, _ = write_modelnet40(tmp_path)
    config = tmp_path / "job.yaml"
    config.write_text("dedup:\n  exclude: [duplicate]\n")
    dataset = shard(tmp_path, "modelnet", "--config", str(config), "--source", f"modelnet40:{path}", points=4096)
    # The fixture cycles three meshes over eight files: box x3, icosphere x3, cylinder x2.
    report = json.loads((dataset / "dedup" / "report.json").read_text())
    groups = {g["kept"]: sorted(c["key"] for c in g["copies"]) for g in report["groups"]}
    families = [{"chair_0001", "chair_0004", "flower_pot_0003"}, {"chair_0002", "flower_pot_0001", "flower_pot_0004"},
                {"chair_0003", "flower_pot_0002"}]
    assert sorted(len(c) for c in groups.values()) == [1, 2, 2]
    for kept, copies in groups.items():
        family = next(f for f in families if kept.removeprefix("modelnet40_") in f)
        assert {k.removeprefix("modelnet40_") for k in copies} == family - {kept.removeprefix("modelnet40_")}
    assert all(c["exact"] for g in report["groups"] for c in g["copies"])
    manifest = manifest_of(dataset)
    assert manifest.total_excluded == 5 and manifest.total_samples == 8 and manifest.total_inputs == 8
    assert manifest.deduplication.excluded == {"duplicate": 5}
    assert excluded_keys(dataset) == {k for copies in groups.values() for k in copies}
    assert sum(s.excluded for s in manifest.splits.values()) == 5 and manifest.sources["modelnet40"].excluded == 5
    assert json.loads((dataset / "manifest.json").read_text())["deduplication"]["report_sha256"] == \
        hashlib.sha256((dataset / "dedup" / "report.json").read_bytes()).hexdigest()

    # Every train mesh is also in the test split: the test one is kept, so training has nothing left, and
    # the test split keeps one of its two boxes. An epoch over it reads each kept sample once.
    test_keys = {k for e in manifest.shardlist if e.split == "test" for k in keys_in_tar_order(dataset, e.url)}
    assert set(groups) <= test_keys and len(groups) == 3
    assert (manifest.splits["train"].excluded, manifest.splits["test"].excluded) == (4, 1)
    with pytest.raises(ManifestError, match=r"no samples in split 'train' \(all 4 are excluded\)"):
        load_manifest(str(dataset), split="train")
    test = load_manifest(str(dataset), split="test")
    order = EpochOrder([dataset_shards(test, 1.0)], seed=0, epoch=0, global_batch=3)
    refs, store = order.positions(), ShardStore()
    read = [store.sample(test.shards[s], i).key for s, i in zip(refs.shard.tolist(), refs.index.tolist())]
    assert sorted(read) == sorted(groups)


def test_turned_rescaled_and_reexported_copies_and_test_shapes_are_found_and_excluded(tmp_path):
    dataset = shard(tmp_path, "corpus", "--source", f"generic:{write_corpus(tmp_path / 'meshes')}")
    # A ModelNet40-style h5 test set (Y-up, 2048 points) holding a resampled sphere among other shapes.
    rng = np.random.default_rng(0)
    sphere = trimesh.sample.sample_surface(trimesh.creation.icosphere(3), 2048, seed=1)[0] * 0.3
    others = [trimesh.sample.sample_surface(m, 2048, seed=2)[0] for m in
              (trimesh.creation.box((1, 2, 3)), trimesh.creation.cylinder(0.2, 3.0), trimesh.creation.capsule(1, 0.2))]
    h5 = tmp_path / "modelnet40_ply_hdf5_2048"
    write_h5(h5 / "ply_data_train0.h5", rng.normal(size=(2, 2048, 3)), np.array([0, 1]))
    write_h5(h5 / "ply_data_test0.h5", np.stack([*others, sphere[:, [1, 2, 0]]]), np.array([0, 1, 0, 1]))
    (h5 / "shape_names.txt").write_text("a\nb\n")

    assert dedup_main([str(dataset), "--test-set", f"modelnet40_h5:{h5}", "--exclude", "duplicate",
                       "test-set"]) == 0
    report = json.loads((dataset / "dedup" / "report.json").read_text())
    [group] = report["groups"]
    chairs = {"generic_a_chair-obj", "generic_b_chair_turned-ply", "generic_c_chair_again-glb"}
    reexported = {"generic_a_chair-obj", "generic_c_chair_again-glb"}  # the same vertices: an exact copy
    first = next(k for e in manifest_of(dataset).shardlist for k in keys_in_tar_order(dataset, e.url) if k in chairs)
    assert group["kept"] == first
    assert {c["key"]: c["exact"] for c in group["copies"]} == {
        k: {k, first} == reexported for k in chairs - {first}}
    [leak] = report["test_set_matches"]
    assert (leak["key"], leak["test_set"], leak["test_key"]) == ("generic_d_sphere-off", "modelnet40_h5",
                                                                 "modelnet40_h5/test[3]")
    assert leak["distance"] < 0.03 and not leak["exact"]
    manifest = manifest_of(dataset)
    assert manifest.deduplication.excluded == {"duplicate": 2, "test-set": 1}
    assert excluded_keys(dataset) == chairs - {first} | {"generic_d_sphere-off"}
    assert manifest.total_inputs == manifest.total_samples + manifest.total_failed == 6


def test_rerunning_gives_the_same_bytes_and_a_report_only_run_excludes_nothing(tmp_path, capsys):
    dataset = shard(tmp_path, "corpus", "--source", f"generic:{write_corpus(tmp_path / 'meshes')}")
    before = (dataset / "manifest.json").read_bytes()
    assert dedup_main([str(dataset), "--exclude", "duplicate"]) == 0
    first = (dataset / "manifest.json").read_bytes(), (dataset / "dedup" / "report.json").read_bytes()
    assert dedup_main([str(dataset), "--exclude", "duplicate"]) == 0
    assert ((dataset / "manifest.json").read_bytes(), (dataset / "dedup" / "report.json").read_bytes()) == first
    assert first[0] != before and manifest_of(dataset).total_excluded == 2
    assert dedup_main([str(dataset)]) == 0  # report only: the earlier exclusions are gone
    manifest = manifest_of(dataset)
    assert manifest.total_excluded == 0 and manifest.deduplication.excluded == {}
    assert "done: 0 of 6 samples excluded (none asked)" in capsys.readouterr().err


def test_missing_or_damaged_fingerprints_and_bad_flags_are_named(tmp_path, capsys):
    dataset = shard(tmp_path, "corpus", "--source", f"generic:{write_corpus(tmp_path / 'meshes')}")
    sidecar = dataset / "fingerprints" / "train-000000.tar.npz"
    sidecar.write_bytes(b"PK\x03\x04 not really")
    assert dedup_main([str(dataset)]) == 1
    assert f"{sidecar}: not a fingerprint file" in capsys.readouterr().err
    sidecar.unlink()
    assert dedup_main([str(dataset)]) == 1
    assert f"{sidecar} is missing: the shards were written before fingerprints were; re-run " \
           "sharding.shard_corpus" in capsys.readouterr().err
    assert shard_main(["--source", f"generic:{tmp_path / 'meshes'}", "--output", str(dataset), "--in-process",
                       "--no-progress", "--num-points", "4096", "--shard-size", "4"]) == 0
    assert sidecar.exists()  # a shard without fingerprints is not finished: re-running writes them
    assert dedup_main([str(dataset), "--test-set", "modelnet:/x"]) == 2
    assert TEST_SET_ERRORS in capsys.readouterr().err
    assert dedup_main([str(dataset), "--tolerance", "0"]) == 2
    assert "tolerance" in capsys.readouterr().err


def test_a_sharded_test_split_is_matched_by_its_fingerprint_files(tmp_path):
    path, _ = write_modelnet40(tmp_path)
    modelnet = shard(tmp_path, "modelnet", "--source", f"modelnet40:{path}", points=4096)
    corpus = shard(tmp_path, "corpus", "--source", f"generic:{write_mesh_dir(tmp_path / 'meshes', 3, bad=False)}",
                   points=4096)
    assert dedup_main([str(corpus), "--test-set", f"shards:{modelnet}", "--exclude", "test-set"]) == 0
    report = json.loads((corpus / "dedup" / "report.json").read_text())
    matches = {m["key"]: m for m in report["test_set_matches"]}
    # ModelNet's test split holds two boxes (the same mesh), a cylinder of another height and a coarser sphere.
    assert matches["generic_class0-mesh_0-obj"]["exact"] and matches["generic_class0-mesh_0-obj"]["test_key"] in {
        "modelnet40_chair_0004", "modelnet40_flower_pot_0003"}
    assert not matches["generic_class1-mesh_1-obj"]["exact"]
    assert matches["generic_class1-mesh_1-obj"]["test_key"] == "modelnet40_flower_pot_0004"
    assert set(matches) == {"generic_class0-mesh_0-obj", "generic_class1-mesh_1-obj"}
    assert report["test_sets"] == {"shards": 4} and manifest_of(corpus).total_excluded == 2


def test_of_a_shape_in_train_and_val_the_val_sample_is_kept_whatever_the_manifest_order():
    from sharding.dedup.dataset import Corpus
    from sharding.dedup.run import _duplicates_keeping_evaluation_splits
    from sharding.manifest import SAMPLE_FORMAT, SampleFormat, ShardEntry, ShardManifest, SourceCounts, SplitCounts

    manifest = ShardManifest(
        shardlist=[ShardEntry(url="train-000000.tar", nsamples=2, split="train"),
                   ShardEntry(url="val-000000.tar", nsamples=1, split="val")],
        total_inputs=3, total_samples=3, total_failed=0, sources={"s": SourceCounts(inputs=3, samples=3, failed=0)},
        splits={"train": SplitCounts(shards=1, samples=2), "val": SplitCounts(shards=1, samples=1)},
        sample=SampleFormat(num_points=16, dtype="float32", format=SAMPLE_FORMAT), config_hash="", plan_hash="",
        tool_version="test")
    corpus = Corpus(keys=np.array(["a", "b", "c"]), sources=np.array(["s"] * 3),
                    exact=np.array([b"x", b"y", b"x"], dtype="S64"), descriptors=np.array([[0.0], [1.0], [0.5]]),
                    shard=np.array([0, 0, 1]), index=np.array([0, 1, 0]))
    found = _duplicates_keeping_evaluation_splits(corpus, manifest, 0.01)
    assert found.other.tolist() == [2, -1, -1] and found.exact.tolist() == [True, False, False]
    np.testing.assert_allclose(found.distance[0], 0.5)


def test_shapenetpart_gives_its_test_list_and_objaverse_lvis_all_its_shapes(tmp_path):
    from sharding.config import TestSetConfig
    from sharding.dedup.test_sets import read_test_set
    from sharding.fingerprint import exact_fingerprint
    from sharding.layouts import Z_UP_FROM_Y_UP
    from tests.launch.test_evaluate_objaverse_lvis import write_lvis_store
    from tests.launch.test_part_data import keys, write_layout

    root, truth = write_layout(tmp_path)
    parts = read_test_set(TestSetConfig(kind="shapenetpart", path=str(root)))
    assert parts.name == "shapenetpart" and parts.keys == keys("test") and parts.descriptors.shape == (3, 51)
    assert parts.exact.tolist() == [exact_fingerprint(truth[k][0][:, Z_UP_FROM_Y_UP]).encode() for k in keys("test")]

    clouds = write_lvis_store(tmp_path / "Objaverse.zarr")
    lvis = read_test_set(TestSetConfig(kind="objaverse_lvis", path=str(tmp_path / "Objaverse.zarr"), name="lvis",
                                       options={"lvis_shot": 2}))
    assert lvis.name == "lvis" and sorted(lvis.keys) == sorted(clouds)  # both sides of the K-shot fold
    assert {k: d for k, d in zip(lvis.keys, lvis.exact.tolist())} == {
        k: exact_fingerprint(c).encode() for k, c in clouds.items()}
    with pytest.raises(ConfigError, match="test-set options"):
        read_test_set(TestSetConfig(kind="scanobjectnn", path=str(tmp_path), options={"variant": "pb_t99"}))
