"""Point clouds with a part label per point, for part segmentation: ShapeNetPart and our own shards.

`load_shapenetpart` reads `shapenetcore_partanno_segmentation_benchmark_v0_normal` (the folder, its
parent, or a .zip / .tar / .tar.gz of it, in place) as the official AsymDSD code does
(remcofl/AsymDSD, `asymdsd/data/datasets_/ShapeNetPart/shapenetpart.py`): the 16 categories in synset
order, 50 global part ids (each category owns a contiguous range), xyz turned Z-up with the (2, 0, 1)
permutation, normals dropped, and the official `shuffled_{train,val,test}_file_list.json` splits.
`load_part_shards` reads shards whose samples carry per-point parts (a `parts.npy` member and
`part_names` metadata, as the synthetic corpus writes them), split as `data.load_shards` splits them.
"""

from __future__ import annotations

import io
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from launch.evaluation.data import (
    DatasetError,
    LabelledDataConfig,
    LabelledSet,
    TrainTest,
    _find_member,
    cap_points,
    read_shards,
    shard_split_indices,
)
from sharding.containers import open_container
from sharding.layouts import Z_UP_FROM_Y_UP

# (category, synset, number of parts), in synset order; global part ids run through the categories in this order.
SHAPENETPART_CATEGORIES: tuple[tuple[str, str, int], ...] = (
    ("airplane", "02691156", 4), ("bag", "02773838", 2), ("cap", "02954340", 2), ("car", "02958343", 4),
    ("chair", "03001627", 4), ("earphone", "03261776", 3), ("guitar", "03467517", 3), ("knife", "03624134", 2),
    ("lamp", "03636649", 4), ("laptop", "03642806", 2), ("motorbike", "03790512", 6), ("mug", "03797390", 2),
    ("pistol", "03948459", 3), ("rocket", "04099429", 3), ("skateboard", "04225987", 3), ("table", "04379243", 3),
)


def _category_parts(counts: Sequence[int]) -> tuple[tuple[int, ...], ...]:
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).tolist()
    return tuple(tuple(range(start, start + n)) for start, n in zip(starts, counts))


SHAPENETPART_CLASSES: tuple[str, ...] = tuple(name for name, _, _ in SHAPENETPART_CATEGORIES)
SHAPENETPART_CATEGORY_PARTS = _category_parts([n for _, _, n in SHAPENETPART_CATEGORIES])  # [0-3], [4, 5], ...
SHAPENETPART_PART_NAMES: tuple[str, ...] = tuple(
    f"{name}/{i}" for (name, _, n) in SHAPENETPART_CATEGORIES for i in range(n))  # "airplane/0" .. "table/2"
SHAPENETPART_SPLITS = ("train", "val", "test")
CATEGORY_FILE = "synsetoffset2category.txt"
SPLIT_FILE = "train_test_split/shuffled_{}_file_list.json"
COLUMNS = 7  # x y z nx ny nz label


def category_mask(category_parts: Sequence[Sequence[int]], num_parts: int | None = None) -> np.ndarray:
    """(C, P) bool: row c is True at category c's part ids; P defaults to one past the largest id."""
    if num_parts is None:
        num_parts = 1 + max((max(p) for p in category_parts if len(p)), default=-1)
    mask = np.zeros((len(category_parts), num_parts), dtype=bool)
    for c, parts in enumerate(category_parts):
        mask[c, list(parts)] = True
    return mask


@dataclass(frozen=True)
class PartSet:
    """S point clouds with a part label per point and an object category per cloud."""

    name: str
    points: np.ndarray  # (S, N, 3) float32, zero-padded
    num_points: np.ndarray  # (S,) int64 valid points per cloud
    parts: np.ndarray  # (S, N) int64 global part ids, -1 on padding
    labels: np.ndarray  # (S,) int64 object category, indexes class_names
    class_names: tuple[str, ...]  # object categories
    part_names: tuple[str, ...]  # global part names, e.g. "airplane/0" or "mug/handle"
    category_parts: tuple[tuple[int, ...], ...]  # per category, its global part ids (ascending)
    keys: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        s = len(self.labels)
        if (self.points.ndim != 3 or self.points.shape[2] != 3 or len(self.points) != s or self.num_points.shape != (s,)
                or self.parts.shape != self.points.shape[:2] or self.labels.ndim != 1):
            raise DatasetError(f"{self.name}: points {self.points.shape}, num_points {self.num_points.shape}, parts "
                               f"{self.parts.shape} and labels {self.labels.shape} do not describe the same (S, N) set")
        if self.keys and len(self.keys) != s:
            raise DatasetError(f"{self.name}: {len(self.keys)} keys for {s} clouds")
        if len(self.category_parts) != len(self.class_names):
            raise DatasetError(f"{self.name}: {len(self.category_parts)} category part lists for "
                               f"{len(self.class_names)} class names")
        for c, ids in enumerate(self.category_parts):
            if list(ids) != sorted(set(ids)) or any(not 0 <= i < len(self.part_names) for i in ids):
                raise DatasetError(f"{self.name}: parts of {self.class_names[c]} {ids} must be ascending ids of the "
                                   f"{len(self.part_names)} part names")
        if not s:
            return
        if self.labels.min() < 0 or self.labels.max() >= len(self.class_names):
            raise DatasetError(f"{self.name}: labels must index the {len(self.class_names)} class names")
        n = self.points.shape[1]
        if self.num_points.min() < 0 or self.num_points.max() > n:
            raise DatasetError(f"{self.name}: num_points must be within 0..{n}")
        valid = np.arange(n) < self.num_points[:, None]
        mask = category_mask(self.category_parts, len(self.part_names))
        in_range = (self.parts >= 0) & (self.parts < len(self.part_names))
        allowed = in_range & mask[self.labels[:, None], np.where(in_range, self.parts, 0)]
        bad = (valid & ~allowed) | (~valid & (self.parts != -1))
        if bad.any():
            i = int(np.flatnonzero(bad.any(axis=1))[0])
            j = int(np.flatnonzero(bad[i])[0])
            sample = self.keys[i] if self.keys else f"#{i}"
            where = "padding" if j >= self.num_points[i] else f"a {self.class_names[self.labels[i]]} point"
            expected = "-1" if j >= self.num_points[i] else f"one of {list(self.category_parts[self.labels[i]])}"
            raise DatasetError(f"{self.name}: sample {sample} has part {int(self.parts[i, j])} at {where} "
                               f"(index {j}); expected {expected}")

    def __len__(self) -> int:
        return len(self.labels)

    def labelled(self) -> LabelledSet:
        """The same clouds for the classification protocols: the category is the label, parts dropped."""
        return LabelledSet(self.name, self.points, self.num_points, self.labels, self.class_names, self.keys)

    def subset(self, index: np.ndarray, name: str | None = None) -> PartSet:
        keys = tuple(self.keys[i] for i in index) if self.keys else ()
        return PartSet(name or self.name, self.points[index], self.num_points[index], self.parts[index],
                       self.labels[index], self.class_names, self.part_names, self.category_parts, keys)

    @classmethod
    def from_clouds(cls, name: str, clouds: Sequence[np.ndarray], parts: Sequence[np.ndarray], labels: Sequence[int],
                    class_names: Sequence[str], part_names: Sequence[str],
                    category_parts: Sequence[Sequence[int]], keys: Sequence[str] = ()) -> PartSet:
        """A PartSet from variable-length (n_i, 3) clouds and their (n_i,) part ids: points padded with zeros,
        parts with -1, to the longest cloud."""
        if len(clouds) != len(parts) or len(clouds) != len(labels):
            raise DatasetError(f"{name}: {len(clouds)} clouds, {len(parts)} part arrays and {len(labels)} labels")
        counts = np.array([len(c) for c in clouds], dtype=np.int64)
        width = int(counts.max(initial=0))
        points = np.zeros((len(clouds), width, 3), dtype=np.float32)
        padded = np.full((len(clouds), width), -1, dtype=np.int64)
        for i, (cloud, part) in enumerate(zip(clouds, parts)):
            if len(part) != len(cloud):
                sample = keys[i] if keys else f"#{i}"
                raise DatasetError(f"{name}: sample {sample} has {len(cloud)} points and {len(part)} part ids")
            points[i, : len(cloud)] = cloud[:, :3]
            padded[i, : len(part)] = part
        return cls(name, points, counts, padded, np.asarray(labels, dtype=np.int64).reshape(-1), tuple(class_names),
                   tuple(part_names), tuple(tuple(int(i) for i in p) for p in category_parts), tuple(keys))


# -- ShapeNetPart, published layout -------------------------------------------------------------------------


def _read_categories(data: bytes, member: str) -> dict[str, int]:
    """synsetoffset2category.txt -> {synset: category index}; every entry must be one of the 16 official ones."""
    known = {synset: (c, name) for c, (name, synset, _) in enumerate(SHAPENETPART_CATEGORIES)}
    out = {}
    for lineno, line in enumerate(data.decode(errors="replace").splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2:
            raise DatasetError(f"{member}: line {lineno} is {line!r}, expected '<Category>\\t<synset>'")
        name, synset = fields
        if synset not in known:
            raise DatasetError(f"{member}: line {lineno}: unknown synset {synset} (not one of the 16 ShapeNetPart "
                               f"categories)")
        c, official = known[synset]
        if name.lower() != official:
            raise DatasetError(f"{member}: line {lineno}: synset {synset} is {official}, not {name}")
        out[synset] = c
    if not out:
        raise DatasetError(f"{member}: no categories")
    return out


def _read_split(data: bytes, member: str, synsets: dict[str, int], root: str) -> list[tuple[str, str, int]]:
    """A shuffled_*_file_list.json -> [(shape member, key, category index)] in file order."""
    try:
        entries = json.loads(data)
    except (ValueError, UnicodeDecodeError) as err:
        raise DatasetError(f"{member}: not JSON ({err})") from None
    if not isinstance(entries, list):
        raise DatasetError(f"{member}: expected a JSON list of 'shape_data/<synset>/<id>', "
                           f"got {type(entries).__name__}")
    out = []
    for entry in entries:
        fields = entry.split("/") if isinstance(entry, str) else []
        if len(fields) != 3 or not all(fields):
            raise DatasetError(f"{member}: entry {entry!r} is not 'shape_data/<synset>/<id>'")
        _, synset, shape = fields
        if synset not in synsets:
            raise DatasetError(f"{member}: entry {entry!r} has unknown synset {synset} (not in {CATEGORY_FILE})")
        out.append((f"{root}{synset}/{shape}.txt", f"{synset}_{shape}", synsets[synset]))
    return out


def _parse_shape(data: bytes, member: str, category: int, max_points: int | None, seed: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """One `<id>.txt` -> (Z-up xyz (n, 3) float32, global part ids (n,) int64), capped at `max_points`."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "input contained no data": reported below
            table = np.loadtxt(io.BytesIO(data), dtype=np.float32, ndmin=2)
    except ValueError as err:
        raise DatasetError(f"{member}: not a table of 'x y z nx ny nz label' lines ({err})") from None
    if table.shape[1] != COLUMNS or not len(table):
        what = "no points" if not len(table) else f"{table.shape[1]} columns"
        raise DatasetError(f"{member}: {what}, expected lines of {COLUMNS} columns 'x y z nx ny nz label'")
    table = cap_points(table, max_points, seed)
    labels = table[:, 6]
    parts = labels.astype(np.int64)
    lo, hi = SHAPENETPART_CATEGORY_PARTS[category][0], SHAPENETPART_CATEGORY_PARTS[category][-1]
    bad = (parts != labels) | (parts < lo) | (parts > hi)
    if bad.any():
        raise DatasetError(f"{member}: label {labels[bad][0]:g} is not a part of {SHAPENETPART_CLASSES[category]} "
                           f"({lo}..{hi})")
    return np.ascontiguousarray(table[:, list(Z_UP_FROM_Y_UP)]), parts


def load_shapenetpart(path: str, max_points: int | None = None, seed: int = 0, storage_options: dict | None = None,
                      splits: Sequence[str] = ("train",)) -> TrainTest:
    """ShapeNetPart's official splits as PartSets: train = the lists named by `splits` (in that order; the
    official code trains on `train`), test = `test`, and `val` = the official val list unless it is in `splits`.

    Every cloud is capped at `max_points` as it is read (`cap_points`, seed `seed` + its index over train, then
    test, then val). Shapes are read one by one (a tar in one pass); errors name the file at fault.
    """
    splits = tuple(splits)
    if not splits or len(set(splits)) != len(splits) or not set(splits) <= {"train", "val"}:
        raise DatasetError(f"ShapeNetPart training splits must be distinct names among train, val; got {splits}")
    with open_container(path, storage_options) as container:
        members = list(container.members())
        category_member = _find_member(members, CATEGORY_FILE, path)
        root = category_member[: -len(CATEGORY_FILE)]
        meta = [category_member] + [root + SPLIT_FILE.format(s) for s in SHAPENETPART_SPLITS]
        files = {}
        for member, data in container.read_many(meta):
            if isinstance(data, FileNotFoundError):
                raise DatasetError(f"{path}: missing {member}")
            if isinstance(data, Exception):
                raise DatasetError(f"{path}:{member}: {data}")
            files[member] = data
        synsets = _read_categories(files[category_member], f"{path}:{category_member}")
        lists = {s: _read_split(files[root + SPLIT_FILE.format(s)], f"{path}:{root}{SPLIT_FILE.format(s)}", synsets,
                                root) for s in SHAPENETPART_SPLITS}
        sets = {"train": [e for s in splits for e in lists[s]], "test": lists["test"]}
        if "val" not in splits:
            sets["val"] = lists["val"]
        present = set(members)
        order: dict[str, tuple[int, int]] = {}  # shape member -> (seed index, category)
        for split in ("train", "test", "val"):
            for member, _, category in sets.get(split, ()):
                order.setdefault(member, (len(order), category))
        for listed in SHAPENETPART_SPLITS:
            split_file = root + SPLIT_FILE.format(listed)
            for member, _, _ in lists[listed]:
                if member in order and member not in present:
                    raise DatasetError(f"{path}: missing {member} (listed in {split_file})")
        clouds: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for member, data in container.read_many(order):
            if isinstance(data, Exception):
                raise DatasetError(f"{path}:{member}: {data}")
            index, category = order[member]
            clouds[member] = _parse_shape(data, f"{path}:{member}", category, max_points, seed + index)
    out = {}
    for split, entries in sets.items():
        out[split] = PartSet.from_clouds(
            f"shapenetpart/{split}", [clouds[m][0] for m, _, _ in entries], [clouds[m][1] for m, _, _ in entries],
            [c for _, _, c in entries], SHAPENETPART_CLASSES, SHAPENETPART_PART_NAMES, SHAPENETPART_CATEGORY_PARTS,
            [k for _, k, _ in entries])
    info = {"kind": "shapenetpart", "path": path, "root": root or ".",
            "split": f"official file lists: train = {' + '.join(splits)}, test = test"
                     + ("" if "val" in splits else ", val = val"),
            "max_points": max_points, "seed": seed}
    return TrainTest(out["train"], out["test"], info, out.get("val"))


# -- our shards -----------------------------------------------------------------------------------------------


def load_part_shards(cfg: LabelledDataConfig) -> TrainTest:
    """Shards with per-point parts as PartSets: the category is the `cfg.label_key` metadata, and global part
    ids number each category's parts (its samples' `part_names`, which must agree) in category order."""
    train, test, split_rule = read_shards(cfg, with_parts=True)
    samples = [(split, i) for split in (train, test) if split is not None for i in range(len(split.clouds))]
    categories: dict[str, tuple[str, ...]] = {}
    for split, i in samples:
        name, parts = split.names[i], split.part_names[i]
        if categories.setdefault(name, parts) != parts:
            raise DatasetError(f"{cfg.path}: sample {split.keys[i]} ({name}) has parts {list(parts)}, another {name} "
                               f"sample {list(categories[name])}")
    class_names = tuple(sorted(categories))
    part_names, category_parts = [], []
    for name in class_names:
        category_parts.append(tuple(range(len(part_names), len(part_names) + len(categories[name]))))
        part_names += [f"{name}/{part}" for part in categories[name]]
    index = {name: c for c, name in enumerate(class_names)}
    for split, i in samples:
        local = split.parts[i]
        if len(local) and (local.min() < 0 or local.max() >= len(split.part_names[i])):
            raise DatasetError(f"{cfg.path}: sample {split.keys[i]} has part indices outside its "
                               f"{len(split.part_names[i])} part_names")
    everything = PartSet.from_clouds(
        "shards", [s.clouds[i] for s, i in samples],
        [category_parts[index[s.names[i]]][0] + s.parts[i] for s, i in samples],
        [index[s.names[i]] for s, i in samples], class_names, part_names, category_parts,
        [s.keys[i] for s, i in samples])
    train_idx, test_idx = shard_split_indices(everything.labels, len(train.clouds), test is not None, cfg)
    info = {"kind": "shards", "path": cfg.path, "manifest_digest": train.digest, "split": split_rule,
            "label_key": cfg.label_key}
    return TrainTest(everything.subset(train_idx, "shards/train"), everything.subset(test_idx, "shards/test"), info)


def load_part_dataset(cfg: LabelledDataConfig) -> TrainTest:
    """The part-labelled train and test sets of `cfg` (kinds shapenetpart and shards)."""
    if cfg.kind == "shapenetpart":
        return load_shapenetpart(cfg.path, cfg.max_points, cfg.split_seed, cfg.storage_options)
    if cfg.kind == "shards":
        return load_part_shards(cfg)
    raise DatasetError(f"protocol partseg needs per-point part labels: dataset kind shapenetpart or shards, "
                       f"not {cfg.kind}")
