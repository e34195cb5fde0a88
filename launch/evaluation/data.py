"""Labelled point-cloud sets for evaluation: our own shards and the common public files.

Every loader returns `LabelledSet`s in memory (evaluation sets are small: ModelNet40 is 12k shapes,
ScanObjectNN PB_T50_RS 14k) with Z-up coordinates, as in pretraining:

* `shards:DIR|URL`: a dataset written by `sharding.shard_corpus`; the label is a key of each sample's
  metadata (`label`). Shards of split `test` are the test set; a corpus without them (the synthetic
  one) is split into train/test by a stratified, seeded hold-out, and the report says so. Samples the
  manifest excludes (duplicates, copies of test shapes) are not read, as in pretraining.
* `scanobjectnn:PATH`: the ScanObjectNN `h5_files.zip` (or the extracted tree), one variant.
* `modelnet40_h5:PATH`: `modelnet40_ply_hdf5_2048` (directory or zip): `ply_data_{train,test}N.h5`
  plus `shape_names.txt`.
* `objaverse_lvis:PATH`: the official code's prepared Objaverse (`Objaverse.zarr`, directory or zip),
  one fold of its LVIS K-shot split (`load_objaverse_lvis`).
* `shapenetpart:PATH`: ShapeNetPart, per-point part labels: read by `part_data` for protocol `partseg`.
* Few-shot folds (`fewshot_fold`): the Point-BERT `ModelNetFewshot` pickles, read by
  `restricted_pickle.loads_arrays`, which builds numpy arrays and nothing else.

The h5 releases are Y-up and are turned Z-up with the permutation the sharder uses; the few-shot
pickles get the reference's y/z swap. Objaverse (Cap3D's point clouds) is Z-up as published and is
read as it is, as the official code does.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from pydantic import Field

from configuration import StrictModel
from launch.evaluation.restricted_pickle import loads_arrays
from launch.evaluation.zarr_v2 import ArrayMeta, ZarrError, read_arrays, read_json
from pipeline.manifest import load_manifest
from pipeline.shards import ShardStore
from sharding.containers import Container, is_archive, open_container
from sharding.layouts import SCANOBJECTNN_CLASSES, SCANOBJECTNN_FILES, Z_UP_FROM_Y_UP

DatasetKind = Literal["shards", "scanobjectnn", "modelnet40_h5", "objaverse_lvis", "shapenetpart"]
DATASET_KINDS = "shards, scanobjectnn, modelnet40_h5, objaverse_lvis, shapenetpart"
FEWSHOT_SWAP_YZ = (0, 2, 1)  # the reference's axis order for the few-shot pickles


class DatasetError(ValueError):
    """A dataset that cannot be read as asked; the message names the file or key."""


@dataclass(frozen=True)
class LabelledSet:
    """S point clouds (zero-padded to a common length) with integer labels indexing `class_names`."""

    name: str
    points: np.ndarray  # (S, N, 3) float32
    num_points: np.ndarray  # (S,) int64, valid points per cloud
    labels: np.ndarray  # (S,) int64
    class_names: tuple[str, ...]
    keys: tuple[str, ...] = field(default=())  # sample ids where the source has them

    def __post_init__(self) -> None:
        s = len(self.labels)
        if self.points.ndim != 3 or self.points.shape[2] != 3 or len(self.points) != s or len(self.num_points) != s:
            raise DatasetError(f"{self.name}: points {self.points.shape}, num_points {self.num_points.shape} and "
                               f"labels {self.labels.shape} do not describe the same (S, N, 3) set")
        if s and (self.labels.min() < 0 or self.labels.max() >= len(self.class_names)):
            raise DatasetError(f"{self.name}: labels must index the {len(self.class_names)} class names")

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: np.ndarray, name: str | None = None) -> LabelledSet:
        keys = tuple(self.keys[i] for i in index) if self.keys else ()
        return LabelledSet(name or self.name, self.points[index], self.num_points[index], self.labels[index],
                           self.class_names, keys)


@dataclass(frozen=True)
class TrainTest:
    train: LabelledSet
    test: LabelledSet
    info: dict  # provenance for the report: kind, path, split rule, manifest digest, ...
    val: LabelledSet | None = None  # an official validation split, where the source has one (ShapeNetPart)


class LabelledDataConfig(StrictModel):
    """Where the labelled data is and how to read it (`--dataset KIND:PATH` plus options)."""

    kind: DatasetKind
    path: str
    variant: Literal["obj_bg", "obj_only", "pb_t50_rs"] = Field(
        "pb_t50_rs", description="ScanObjectNN variant (kind scanobjectnn only)")
    label_key: str = Field("label", description="metadata key holding the class (kind shards only)")
    test_fraction: float = Field(0.3, gt=0, lt=1, description="hold-out share when shards have no test split")
    split_seed: int = 0
    lvis_shot: int = Field(10, ge=1, description="Objaverse-LVIS: K of the official K-shot split (built: 10)")
    lvis_fold: int = Field(0, ge=0, description="Objaverse-LVIS: the split's seed (built: 0..9)")
    max_points: int | None = Field(
        None, ge=1, description="keep a seeded uniform subsample of at most this many points per cloud, as it is "
                                "read: bounds memory, and makes FPS over dense shard clouds affordable")
    storage_options: dict = Field(default_factory=dict)


def dataset_spec(spec: str) -> dict[str, str]:
    """`KIND:PATH` -> {"kind", "path"} (validated as a LabelledDataConfig with the rest of the job config)."""
    kind, sep, path = spec.partition(":")
    if not sep or not path:
        raise DatasetError(f"--dataset must be KIND:PATH with KIND one of {DATASET_KINDS}; "
                           f"got {spec!r}")
    return {"kind": kind, "path": path}


def _pad(clouds: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    counts = np.array([len(c) for c in clouds], dtype=np.int64)
    out = np.zeros((len(clouds), int(counts.max(initial=0)), 3), dtype=np.float32)
    for i, cloud in enumerate(clouds):
        out[i, : len(cloud)] = cloud[:, :3]
    return out, counts


def cap_points(cloud: np.ndarray, max_points: int | None, seed: int) -> np.ndarray:
    """`cloud` itself, or a uniform subsample of `max_points` of its points drawn with `seed`."""
    if max_points is None or len(cloud) <= max_points:
        return cloud
    keep = np.sort(np.random.default_rng(seed).choice(len(cloud), size=max_points, replace=False))
    return cloud[keep]


def _cap_set(data: LabelledSet, max_points: int | None, seed: int) -> LabelledSet:
    """`data` with every cloud capped at `max_points` (`cap_points`, one seed per cloud)."""
    if max_points is None or data.points.shape[1] <= max_points:
        return data
    clouds = [cap_points(p[:n], max_points, seed + i) for i, (p, n) in enumerate(zip(data.points, data.num_points))]
    points, counts = _pad(clouds)
    return LabelledSet(data.name, points, counts, data.labels, data.class_names, data.keys)


def _encode_labels(names: list[str], class_names: tuple[str, ...]) -> np.ndarray:
    index = {n: i for i, n in enumerate(class_names)}
    return np.array([index[n] for n in names], dtype=np.int64)


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) indices with about `test_fraction` of every class in test (at least one each side)."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        if len(members) < 2:
            raise DatasetError(f"class {label} has {len(members)} sample(s); a hold-out split needs at least 2")
        n_test = min(max(1, round(test_fraction * len(members))), len(members) - 1)
        test.extend(members[:n_test])
        train.extend(members[n_test:])
    return np.sort(np.array(train)), np.sort(np.array(test))


# -- our shards --------------------------------------------------------------------------------------


@dataclass
class ShardSplit:
    """The samples of one manifest split: clouds (capped as read), labels, keys, and per-point parts if asked."""

    clouds: list[np.ndarray]
    names: list[str]
    keys: list[str]
    digest: str
    parts: list[np.ndarray] = field(default_factory=list)  # (n,) local part indices, with_parts only
    part_names: list[tuple[str, ...]] = field(default_factory=list)  # each sample's `part_names` metadata


def read_shard_split(cfg: LabelledDataConfig, split: str, offset: int = 0, with_parts: bool = False) -> ShardSplit:
    """Read split `split` of the shards, less the samples the manifest excludes; each cloud (and its parts)
    capped at `cfg.max_points` with seed `cfg.split_seed` + `offset` + its index, so the same clouds come
    out with or without parts."""
    manifest = load_manifest(cfg.path, cfg.storage_options, split=split)
    store = ShardStore(storage_options=cfg.storage_options)
    out = ShardSplit([], [], [], manifest.digest)
    try:
        for shard in manifest.shards:
            excluded = set(shard.excluded)
            for i in range(store.num_samples(shard)):
                if i in excluded:
                    continue
                sample = store.sample(shard, i)
                label = sample.meta.get(cfg.label_key)
                if label is None:
                    raise DatasetError(f"shard {shard.url}: sample {sample.key} has no metadata key "
                                       f"{cfg.label_key!r} (keys: {', '.join(sorted(sample.meta))})")
                cloud = np.asarray(sample.points, dtype=np.float32)
                if with_parts:
                    if sample.parts is None or not isinstance(sample.meta.get("part_names"), list):
                        raise DatasetError(f"shard {shard.url}: sample {sample.key} has no per-point part labels "
                                           "(a parts.npy member and part_names metadata)")
                    cloud = np.column_stack([cloud, sample.parts.astype(np.float32)])
                cloud = cap_points(cloud, cfg.max_points, cfg.split_seed + len(out.clouds) + offset)
                if with_parts:
                    out.parts.append(cloud[:, 3].astype(np.int64))
                    out.part_names.append(tuple(str(n) for n in sample.meta["part_names"]))
                    cloud = np.ascontiguousarray(cloud[:, :3])
                out.clouds.append(cloud)
                out.names.append(str(label))
                out.keys.append(sample.key)
    finally:
        store.close()
    return out


def _shard_splits(cfg: LabelledDataConfig) -> set[str]:
    """The splits a manifest holds (every shard entry names one)."""
    manifest = load_manifest(cfg.path, cfg.storage_options, split=None)
    return {entry.split for entry in manifest.document.shardlist}


def read_shards(cfg: LabelledDataConfig, with_parts: bool = False) -> tuple[ShardSplit, ShardSplit | None, str]:
    """(train split, test split or None, the split rule for the report) of a shard dataset."""
    train = read_shard_split(cfg, "train", with_parts=with_parts)
    if "test" in _shard_splits(cfg):
        return train, read_shard_split(cfg, "test", len(train.clouds), with_parts), "manifest splits train/test"
    return train, None, (f"stratified hold-out of the train split, test_fraction={cfg.test_fraction}, "
                         f"seed={cfg.split_seed}")


def shard_split_indices(labels: np.ndarray, n_train: int, has_test: bool, cfg: LabelledDataConfig
                        ) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) indices into train + test samples: the manifest's splits, else the stratified hold-out."""
    if has_test:
        return np.arange(n_train), np.arange(n_train, len(labels))
    return stratified_split(labels, cfg.test_fraction, cfg.split_seed)


def load_shards(cfg: LabelledDataConfig) -> TrainTest:
    train, test, split_rule = read_shards(cfg)
    test = test or ShardSplit([], [], [], train.digest)
    names = train.names + test.names
    class_names = tuple(sorted(set(names)))
    points, counts = _pad(train.clouds + test.clouds)
    labels = _encode_labels(names, class_names)
    everything = LabelledSet("shards", points, counts, labels, class_names, tuple(train.keys + test.keys))
    train_idx, test_idx = shard_split_indices(labels, len(train.clouds), bool(test.clouds), cfg)
    info = {"kind": "shards", "path": cfg.path, "manifest_digest": train.digest, "split": split_rule,
            "label_key": cfg.label_key}
    return TrainTest(everything.subset(train_idx, "shards/train"), everything.subset(test_idx, "shards/test"), info)


# -- public h5 releases ------------------------------------------------------------------------------


def _h5_arrays(data: bytes, member: str) -> tuple[np.ndarray, np.ndarray]:
    import h5py

    try:
        with h5py.File(io.BytesIO(data), "r") as f:
            points = np.asarray(f["data"][()], dtype=np.float32)
            labels = np.asarray(f["label"][()]).reshape(-1).astype(np.int64)
    except (OSError, KeyError) as err:
        raise DatasetError(f"{member}: not an h5 point-cloud file with 'data' and 'label' ({err})") from None
    if points.ndim != 3 or points.shape[2] < 3 or len(points) != len(labels):
        raise DatasetError(f"{member}: data {points.shape} and label {labels.shape} do not match (N, P, 3) / (N,)")
    return np.ascontiguousarray(points[:, :, list(Z_UP_FROM_Y_UP)]), labels


def _find_member(members: list[str], tail: str, path: str) -> str:
    found = [m for m in members if m == tail or m.endswith("/" + tail)]
    if len(found) != 1:
        what = "no" if not found else f"{len(found)} files named"
        raise DatasetError(f"{path}: {what} {tail}")
    return found[0]


def load_scanobjectnn(cfg: LabelledDataConfig) -> TrainTest:
    """One ScanObjectNN variant; labels index the official 15 class names."""
    sets = {}
    with open_container(cfg.path, cfg.storage_options) as container:
        members = list(container.members())
        for split in ("train", "test"):
            member = _find_member(members, SCANOBJECTNN_FILES[cfg.variant, split], cfg.path)
            points, labels = _h5_arrays(container.read(member), member)
            if labels.min() < 0 or labels.max() >= len(SCANOBJECTNN_CLASSES):
                raise DatasetError(f"{member}: labels outside 0..{len(SCANOBJECTNN_CLASSES) - 1}")
            counts = np.full(len(points), points.shape[1], dtype=np.int64)
            sets[split] = LabelledSet(f"scanobjectnn_{cfg.variant}/{split}", points, counts, labels,
                                      SCANOBJECTNN_CLASSES)
    return TrainTest(sets["train"], sets["test"], {"kind": "scanobjectnn", "path": cfg.path, "variant": cfg.variant})


_MODELNET_H5 = re.compile(r"(?:^|/)ply_data_(train|test)(\d+)\.h5$")


def load_modelnet40_h5(cfg: LabelledDataConfig) -> TrainTest:
    """`modelnet40_ply_hdf5_2048`: every `ply_data_<split><i>.h5` in index order, names from shape_names.txt."""
    with open_container(cfg.path, cfg.storage_options) as container:
        members = list(container.members())
        names_member = _find_member(members, "shape_names.txt", cfg.path)
        class_names = tuple(line.strip() for line in container.read(names_member).decode().splitlines() if line.strip())
        sets = {}
        for split in ("train", "test"):
            files = sorted((int(m.group(2)), name) for name in members if (m := _MODELNET_H5.search(name))
                           and m.group(1) == split)
            if not files:
                raise DatasetError(f"{cfg.path}: no ply_data_{split}*.h5 files")
            parts = [_h5_arrays(container.read(name), name) for _, name in files]
            points = np.concatenate([p for p, _ in parts])
            labels = np.concatenate([lab for _, lab in parts])
            if labels.min() < 0 or labels.max() >= len(class_names):
                raise DatasetError(f"{cfg.path}: labels outside 0..{len(class_names) - 1} of {names_member}")
            counts = np.full(len(points), points.shape[1], dtype=np.int64)
            sets[split] = LabelledSet(f"modelnet40_h5/{split}", points, counts, labels, class_names)
    return TrainTest(sets["train"], sets["test"], {"kind": "modelnet40_h5", "path": cfg.path})


# -- Objaverse-LVIS, as the official code prepares it --------------------------------------------------


def _zarr_root(container: Container, path: str) -> str:
    """The store's root inside the container: the top, or the one folder an archive holds it in."""
    try:
        container.read(".zgroup")
        return ""
    except FileNotFoundError:
        pass
    if not is_archive(path):
        raise DatasetError(f"{path}: no .zgroup: not a zarr store (the official Objaverse.zarr)")
    roots = [m[: -len("/.zgroup")] for m in container.members() if m.count("/") == 1 and m.endswith("/.zgroup")]
    if len(roots) != 1:
        raise DatasetError(f"{path}: expected one zarr store (.zgroup) at the top or in one folder, found {len(roots)}")
    return roots[0] + "/"


def _lvis_split(container: Container, path: str, root: str, group: str, label_key: str, num_classes: int
                ) -> tuple[list[str], list[int]] | None:
    """(item paths, labels) of one split group, or None when the group does not exist."""
    member = f"{root}{group}/.zattrs"
    try:
        attrs = read_json(container, member)
    except FileNotFoundError:
        return None
    except ZarrError as err:
        raise DatasetError(f"{path}:{err}") from None
    paths, labels = attrs.get("paths"), attrs.get(label_key)
    if not isinstance(paths, list) or not isinstance(labels, dict):
        raise DatasetError(f"{path}:{member}: expected 'paths' (a list) and {label_key!r} (path -> label)")
    out = []
    for item in paths:
        label = labels.get(item) if isinstance(item, str) else None
        if not isinstance(label, int) or not 0 <= label < num_classes:
            raise DatasetError(f"{path}:{member}: {item!r} has label {label!r}, not one of 0..{num_classes - 1}")
        out.append(label)
    return paths, out


def _lvis_clouds(container: Container, path: str, root: str, items: list[str], cfg: LabelledDataConfig, offset: int
                 ) -> list[np.ndarray]:
    """Each item's `points` array, capped at `cfg.max_points` as it is read."""
    metas = []
    for item in items:
        member = f"{root}{item}/points/.zarray"
        try:
            metas.append(ArrayMeta.parse(member, read_json(container, member), container.max_bytes))
        except FileNotFoundError:
            raise DatasetError(f"{path}:{member}: missing (item {item} of a split group)") from None
        except ZarrError as err:
            raise DatasetError(f"{path}:{err}") from None
        if len(metas[-1].shape) != 2 or metas[-1].shape[1] < 3:
            raise DatasetError(f"{path}:{member}: shape {metas[-1].shape}, expected (N, >=3) points")
    clouds = []
    try:
        for _, points in read_arrays(container, metas):
            cloud = np.asarray(points[:, :3], dtype=np.float32)
            clouds.append(cap_points(cloud, cfg.max_points, cfg.split_seed + offset + len(clouds)))
    except ZarrError as err:
        raise DatasetError(f"{path}:{err}") from None
    return clouds


def load_objaverse_lvis(cfg: LabelledDataConfig) -> TrainTest:
    """Objaverse-LVIS from the official code's `Objaverse.zarr` (zarr v2; directory or zip, read in place).

    LVIS has no official train/test split; the official code (remcofl/AsymDSD,
    `asymdsd/data/datasets_/Objaverse_v2/objaverse_.py`) keeps the LVIS categories with at least K
    shapes and, per seed f, shuffles each category's shapes with `random.Random(f)` and puts K of them in
    group `lvis_train_s{K}f{f}` and the rest in `lvis_test_s{K}f{f}` (K = 10, f = 0..9). Each group's
    `.zattrs` holds `paths` and `lvis_s{K}` (path -> label), the root's `label_names["lvis_s{K}"]` the
    category names, and each shape is the float32 array `<path>/points` (Cap3D's clouds, Z-up, kept as
    read). The official evaluation script names the test group `lvis_val_s{K}f{f}`, which the builder
    does not write; that name is read when `lvis_test_...` is absent. The test side holds tens of
    thousands of dense clouds: `max_points` keeps memory in bounds.
    """
    label_key, fold = f"lvis_s{cfg.lvis_shot}", f"s{cfg.lvis_shot}f{cfg.lvis_fold}"
    with open_container(cfg.path, cfg.storage_options) as container:
        root = _zarr_root(container, cfg.path)
        try:
            label_names = read_json(container, f"{root}.zattrs").get("label_names")
        except FileNotFoundError:
            label_names = None
        except ZarrError as err:
            raise DatasetError(f"{cfg.path}:{err}") from None
        names = label_names.get(label_key) if isinstance(label_names, dict) else None
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise DatasetError(f"{cfg.path}:{root}.zattrs: no label_names[{label_key!r}] list of category names "
                               f"(was the store built with lvis_few_shot={cfg.lvis_shot}?)")
        class_names = tuple(names)
        splits, groups = {}, {}
        for split, candidates in (("train", ("lvis_train",)), ("test", ("lvis_test", "lvis_val"))):
            for prefix in candidates:
                found = _lvis_split(container, cfg.path, root, f"{prefix}_{fold}", label_key, len(class_names))
                if found is not None:
                    splits[split], groups[split] = found, f"{prefix}_{fold}"
                    break
            else:
                raise DatasetError(f"{cfg.path}: no group {candidates[0]}_{fold} (its .zattrs) in the store")
        sets = {}
        for split, (items, labels) in splits.items():
            offset = len(splits["train"][0]) if split == "test" else 0
            points, counts = _pad(_lvis_clouds(container, cfg.path, root, items, cfg, offset))
            sets[split] = LabelledSet(f"objaverse_lvis/{split}", points, counts, np.array(labels, dtype=np.int64),
                                      class_names, tuple(items))
    info = {"kind": "objaverse_lvis", "path": cfg.path, "train_group": groups["train"], "test_group": groups["test"],
            "split": f"official LVIS {cfg.lvis_shot}-shot split, seed {cfg.lvis_fold}"}
    return TrainTest(sets["train"], sets["test"], info)


LOADERS = {"shards": load_shards, "scanobjectnn": load_scanobjectnn, "modelnet40_h5": load_modelnet40_h5,
           "objaverse_lvis": load_objaverse_lvis}
CAPPED_AS_READ = ("shards", "objaverse_lvis")


def load_dataset(cfg: LabelledDataConfig) -> TrainTest:
    """The train and test sets of `cfg`, every cloud capped at `cfg.max_points` (some kinds as they are read)."""
    if cfg.kind not in LOADERS:
        raise DatasetError(f"dataset kind {cfg.kind} holds part labels for protocol partseg; the classification "
                           f"protocols read kinds {', '.join(LOADERS)}")
    data = LOADERS[cfg.kind](cfg)
    if cfg.kind in CAPPED_AS_READ:
        return data
    return TrainTest(_cap_set(data.train, cfg.max_points, cfg.split_seed),
                     _cap_set(data.test, cfg.max_points, cfg.split_seed + len(data.train)), data.info)


# -- few-shot folds ----------------------------------------------------------------------------------


def _fewshot_split(rows: object, source: str, split: str, way: int) -> LabelledSet:
    if not isinstance(rows, list) or not rows:
        raise DatasetError(f"{source}: '{split}' must be a non-empty list of (points, label, ...) rows")
    clouds, labels = [], []
    for i, row in enumerate(rows):
        if not isinstance(row, (tuple, list)) or len(row) < 2 or not isinstance(row[0], np.ndarray):
            raise DatasetError(f"{source}: {split}[{i}] is not a (points array, label, ...) row")
        points = np.asarray(row[0], dtype=np.float32)
        if points.ndim != 2 or points.shape[1] < 3:
            raise DatasetError(f"{source}: {split}[{i}] points have shape {points.shape}, expected (N, >=3)")
        clouds.append(points[:, list(FEWSHOT_SWAP_YZ)])
        labels.append(int(row[1]))
    labels_arr = np.array(labels, dtype=np.int64)
    if labels_arr.min() < 0 or labels_arr.max() >= way:
        raise DatasetError(f"{source}: {split} labels must be 0..{way - 1}, got {labels_arr.min()}..{labels_arr.max()}")
    points, counts = _pad(clouds)
    return LabelledSet(f"{source}/{split}", points, counts, labels_arr, tuple(f"class_{i}" for i in range(way)))


def fewshot_fold(path: str, way: int, shot: int, fold: int, storage_options: dict | None = None) -> TrainTest:
    """Fold `fold` of the N-way K-shot task: `<path>/.../{way}way_{shot}shot/{fold}.pkl` (directory or zip)."""
    tail = f"{way}way_{shot}shot/{fold}.pkl"
    with open_container(path, storage_options) as container:
        member = _find_member(list(container.members()), tail, path)
        doc = loads_arrays(container.read(member), f"{path}:{member}")
    if not isinstance(doc, dict) or not {"train", "test"} <= set(doc):
        raise DatasetError(f"{path}:{member}: expected a dict with 'train' and 'test', got {type(doc).__name__}")
    source = f"fewshot_{way}w{shot}s_f{fold}"
    return TrainTest(_fewshot_split(doc["train"], source, "train", way), _fewshot_split(doc["test"], source, "test", way),
                     {"kind": "fewshot", "path": path, "file": member, "way": way, "shot": shot, "fold": fold})
