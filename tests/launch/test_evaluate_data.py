"""Labelled data for evaluation: our shards (labels from the sample metadata), the ScanObjectNN and
ModelNet40 h5 releases as published (directory or zip, Y-up turned Z-up), and clear errors."""

from __future__ import annotations

import shutil
import zipfile

import numpy as np
import pytest

from launch.evaluation.data import (
    LabelledDataConfig,
    DatasetError,
    load_dataset,
    load_modelnet40_h5,
    load_scanobjectnn,
    load_shards,
    stratified_split,
)
from pipeline.manifest import load_manifest
from pipeline.shards import ShardStore
from sharding.synthetic import FAMILIES, family_of
from tests.conftest import exclude_samples
from tests.launch.eval_fixtures import write_h5


@pytest.mark.slow
def test_shards_without_a_test_split_get_a_stratified_holdout(pretrain_shards):
    data = load_shards(LabelledDataConfig(kind="shards", path=str(pretrain_shards), test_fraction=0.34))
    assert data.train.class_names == tuple(sorted(FAMILIES))
    assert len(data.train) + len(data.test) == 48 and len(data.test) == 16  # 3 shapes per family, 1 held out
    for split in (data.train, data.test):
        for key, label in zip(split.keys, split.labels):
            index = int(key.rsplit("_", 1)[1])
            assert split.class_names[label] == family_of(index)
    assert set(data.train.keys).isdisjoint(data.test.keys)
    assert data.train.points.shape[1:] == (4096, 3) and "hold-out" in data.info["split"]
    assert data.info["manifest_digest"]


@pytest.mark.slow
def test_samples_the_manifest_excludes_are_not_evaluated(pretrain_shards, tmp_path):
    cfg = LabelledDataConfig(kind="shards", path=str(pretrain_shards), test_fraction=0.34)
    whole = load_shards(cfg)
    data = tmp_path / "shards"
    shutil.copytree(pretrain_shards, data)
    exclude_samples(data, {0: [0, 7], 2: [5]})  # three families keep two shapes, enough for the hold-out
    kept = load_shards(cfg.model_copy(update={"path": str(data)}))
    manifest, store = load_manifest(str(data)), ShardStore()
    dropped = {store.sample(shard, i).key for shard in manifest.shards for i in shard.excluded}
    store.close()
    assert len(dropped) == 3
    for split in (kept.train, kept.test):
        for key, label in zip(split.keys, split.labels):
            assert split.class_names[label] == family_of(int(key.rsplit("_", 1)[1]))  # labels stay with keys
    assert len(kept.train) + len(kept.test) == 45
    assert set(kept.train.keys) | set(kept.test.keys) == (set(whole.train.keys) | set(whole.test.keys)) - dropped


@pytest.mark.slow
def test_max_points_caps_every_cloud_with_a_seeded_subset_of_its_points(pretrain_shards):
    whole = load_shards(LabelledDataConfig(kind="shards", path=str(pretrain_shards), test_fraction=0.34))
    capped = [load_shards(LabelledDataConfig(kind="shards", path=str(pretrain_shards), test_fraction=0.34,
                                             max_points=500)) for _ in range(2)]
    assert capped[0].train.keys == whole.train.keys and capped[0].train.points.shape[1:] == (500, 3)
    np.testing.assert_array_equal(capped[0].train.points, capped[1].train.points)  # the same subset every time
    assert (capped[0].train.num_points == 500).all()
    for full, sub in zip(whole.train.points[:3], capped[0].train.points[:3]):
        assert {tuple(p) for p in sub.tolist()} <= {tuple(p) for p in full.tolist()}
    assert not np.array_equal(capped[0].train.points[0], capped[0].train.points[1])


@pytest.mark.slow
def test_shards_missing_label_key_names_it(pretrain_shards):
    with pytest.raises(DatasetError, match=r"no metadata key 'class' \(keys: .*label"):
        load_shards(LabelledDataConfig(kind="shards", path=str(pretrain_shards), label_key="class"))


def test_stratified_split_keeps_every_class_on_both_sides():
    labels = np.array([0] * 10 + [1] * 3 + [2] * 2)
    train, test = stratified_split(labels, 0.3, seed=0)
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(15))
    assert np.bincount(labels[test]).tolist() == [3, 1, 1] and np.bincount(labels[train]).tolist() == [7, 2, 1]
    with pytest.raises(DatasetError, match="class 0 has 1 sample"):
        stratified_split(np.array([0, 1, 1]), 0.3, seed=0)


def _scanobjectnn_tree(root, rng):
    clouds = {}
    for name, n in (("training_objectdataset_augmentedrot_scale75.h5", 6), ("test_objectdataset_augmentedrot_scale75.h5", 4),
                    ("training_objectdataset.h5", 5), ("test_objectdataset.h5", 3)):
        points, labels = rng.normal(size=(n, 2048, 3)), rng.integers(0, 15, n)
        write_h5(root / "h5_files" / "main_split" / name, points, labels)
        clouds[name] = (points.astype(np.float32), labels)
    return clouds


def test_scanobjectnn_variant_from_directory_and_zip(tmp_path):
    clouds = _scanobjectnn_tree(tmp_path / "tree", np.random.default_rng(0))
    archive = tmp_path / "h5_files.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for f in (tmp_path / "tree").rglob("*.h5"):
            z.write(f, f.relative_to(tmp_path / "tree").as_posix())
    for path in (tmp_path / "tree", archive):
        data = load_scanobjectnn(LabelledDataConfig(kind="scanobjectnn", path=str(path), variant="pb_t50_rs"))
        points, labels = clouds["test_objectdataset_augmentedrot_scale75.h5"]
        assert len(data.train) == 6 and len(data.test) == 4 and data.train.class_names[0] == "bag"
        np.testing.assert_array_equal(data.test.labels, labels)
        np.testing.assert_array_equal(data.test.points, points[:, :, [2, 0, 1]])  # Y-up -> Z-up
        assert data.test.num_points.tolist() == [2048] * 4
    bg = load_scanobjectnn(LabelledDataConfig(kind="scanobjectnn", path=str(archive), variant="obj_bg"))
    assert (len(bg.train), len(bg.test)) == (5, 3)
    with pytest.raises(DatasetError, match=r"no main_split_nobg/training_objectdataset\.h5"):
        load_scanobjectnn(LabelledDataConfig(kind="scanobjectnn", path=str(archive), variant="obj_only"))


def test_modelnet40_h5_concatenates_files_in_index_order(tmp_path):
    root = tmp_path / "modelnet40_ply_hdf5_2048"
    rng = np.random.default_rng(1)
    parts = {}
    for name, n in (("ply_data_train1.h5", 3), ("ply_data_train0.h5", 2), ("ply_data_test0.h5", 4)):
        parts[name] = (rng.normal(size=(n, 2048, 3)).astype(np.float32), rng.integers(0, 40, n))
        write_h5(root / name, *parts[name])
    names = [f"class{i:02d}" for i in range(40)]
    (root / "shape_names.txt").write_text("\n".join(names) + "\n")
    data = load_modelnet40_h5(LabelledDataConfig(kind="modelnet40_h5", path=str(root)))
    assert data.train.class_names == tuple(names)
    expected = np.concatenate([parts["ply_data_train0.h5"][1], parts["ply_data_train1.h5"][1]])
    np.testing.assert_array_equal(data.train.labels, expected)
    np.testing.assert_array_equal(data.train.points[2], parts["ply_data_train1.h5"][0][0][:, [2, 0, 1]])
    capped = load_dataset(LabelledDataConfig(kind="modelnet40_h5", path=str(root), max_points=256))
    assert capped.train.points.shape == (5, 256, 3) and capped.test.points.shape == (4, 256, 3)
    assert {tuple(p) for p in capped.test.points[3].tolist()} <= {tuple(p) for p in data.test.points[3].tolist()}
    (root / "shape_names.txt").write_text("only_one\n")
    with pytest.raises(DatasetError, match="labels outside 0..0"):
        load_modelnet40_h5(LabelledDataConfig(kind="modelnet40_h5", path=str(root)))
