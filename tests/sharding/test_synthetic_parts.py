"""Part labels of the synthetic corpus: on every face, meaningful, free of any change to the shapes, and
carried through sampling and the sharding job into the shards."""

from __future__ import annotations

import hashlib
import io
import shutil
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from pipeline.manifest import ShardInfo, load_manifest
from pipeline.shards import ShardError, ShardStore
from sharding.records import Loaded, MeshData
from sharding.sampling import Cloud, SampleSpec, make_points
from sharding.shard_corpus import main as shard_corpus
from sharding.synthetic import FAMILIES, PART_NAMES, generate_shape

N_FAMILIES = len(FAMILIES)

# sha256 of the vertices rounded to 1e-6 then the faces, computed with the generator before it labelled
# parts: labelling must not move a vertex or take a random draw. Rounded, because the last bits of
# trigonometry and BLAS results differ between CPUs (SIMD kernels), and the test must pass on any.
GEOMETRY_SHA256 = {
    (0, 0): "f2d7ef2309bc7a5b098048ac9264dd8eb9bc64bc3b71772d66973976d3e2ec36",  # table
    (1, 0): "47a6fe2aa4a7d1efcdcfce4a94ba0a49fdc19bca760b5b2e0190917b84e6bfe5",  # stool
    (2, 0): "ced763b35f2586632c7205f6ad725adf5150fcbe7ed9870ad9c0cc4ccee29ae0",  # chair
    (3, 0): "58e66c9c8d974b668a0a31040e69aa5c42ea368ce27205dfd348a0a824376611",  # shelf
    (4, 0): "4dd6481109fd8a83c8a2b3db62c13879ee087f073240f2a8260801a01d2792d0",  # mug
    (5, 0): "e4a9fbcea9139ae8ef1faef35d478913487a18c41ef06c68c312a1cf33c56e6c",  # can
    (6, 0): "2e8abf14cbd2cd25815a08a371c07d7031444482c1b0a6a76326f78890ce9e20",  # bottle
    (7, 0): "35638c68ac220c3ce83dfd15b3b76b75cc810ca271c3231a2e3a8c15248d8952",  # bowl
    (8, 0): "e77922560101661041cb1dbdad597e97db645ac1067bc44d99b937483a98445a",  # torus
    (9, 0): "593fc795f281ebbd09c2eac838a236ca3a2e6e42faea8dca63798cf9ef400d3c",  # ring
    (10, 0): "70192cc92ae9d9313619f322c8a751079304fe157bf8718b29de75f75ec84179",  # cone
    (11, 0): "17556d213b510d419a248838514a8baab74b7eb4a6b263b25f446f299e4f1c47",  # pyramid
    (12, 0): "6fa701810c56413f28f0e7b0c5753fff8249dbc9f4f9fc097e180facba31a772",  # lamp
    (13, 0): "b1ea0ca33b3cec5531d87090dc6f320eb587645a83eeeda45a274d2a8af4176a",  # mushroom
    (14, 0): "839c30247480c160b0d2093345f17d3c59a37076666ca84c90c2c26cb3fe2033",  # dumbbell
    (15, 0): "2d4a620bf4a93b3a2a7fd8b442f37b973895a4a71dd2d5d9a2f8f16ad5769f79",  # capsule
    (21, 5): "4cc6f6859406713e966d7eaafe169dc53102e6060073d2e26b950999ff0c2d8d",  # can
    (40, 3): "340968264154a7edcf3168b09eb4354ae8824f4fb7a47e172747e170eb55b3ed",  # torus
    (63, 11): "fa1ddd5dd9427c41d5686d0d6f46e2e571ba46252cc5a991889f5077094b3ed0",  # capsule
}
# sha256 of make_points(...).points (2048 float32 points, key "synthetic_<index>") rounded to 1e-5, also
# from before.
POINTS_SHA256 = {
    (2, 0): "e908d7c8e48ba97020a394e72fc2f208938fcc4971cdc386f1d1f852cc0e3666",  # chair
    (10, 0): "de57faa1f3bb76fe8886d6802d85448df25011c785c8edf6bd9635979d0270cf",  # cone
    (27, 4): "ebcef8082d7feaf9f11183e9d6d9091c32bc8e12abcc2056469ad8e459dd571a",  # pyramid
}


def rounded_sha256(values: np.ndarray, decimals: int, exact: np.ndarray | None = None) -> str:
    """sha256 of `values` rounded (as float64, -0.0 made 0.0), then of `exact` as int64 when given."""
    data = (np.round(values.astype(np.float64), decimals) + 0.0).tobytes()
    return hashlib.sha256(data + (b"" if exact is None else exact.astype(np.int64).tobytes())).hexdigest()


def sampled(index: int, seed: int, num_points: int = 2048) -> tuple[MeshData, str, Cloud]:
    """Shape (index, seed), and its points sampled as the sharding job samples them."""
    mesh, family = generate_shape(index, seed)
    cloud = make_points(Loaded(mesh, "", False), f"synthetic_{index:07d}", SampleSpec(num_points))
    return mesh, family, cloud


def test_every_face_has_a_part_of_its_family() -> None:
    used: dict[str, Counter] = {family: Counter() for family in FAMILIES}
    for index in range(8 * N_FAMILIES):
        mesh, family = generate_shape(index, seed=0)
        assert mesh.part_names == PART_NAMES[family]
        assert mesh.face_parts.shape == (len(mesh.faces),) and mesh.face_parts.dtype == np.uint8, family
        assert mesh.face_parts.max() < len(mesh.part_names), family
        used[family][len(np.unique(mesh.face_parts))] += 1
        used[family].update(mesh.part_names[p] for p in np.unique(mesh.face_parts))
    for family, names in PART_NAMES.items():
        assert len(set(names)) == len(names) and all(used[family][name] for name in names), family
    always_several = [f for f in FAMILIES if used[f][1] == 0]  # no shape of the family has a single part
    assert len(always_several) >= 13, always_several
    assert sum(len(names) >= 2 for names in PART_NAMES.values()) >= 14


@pytest.mark.parametrize(("index", "seed"), sorted(GEOMETRY_SHA256))
def test_labels_leave_the_shapes_unchanged(index: int, seed: int) -> None:
    mesh, _ = generate_shape(index, seed)
    assert rounded_sha256(mesh.vertices, 6, mesh.faces) == GEOMETRY_SHA256[index, seed]


@pytest.mark.parametrize(("index", "seed"), sorted(POINTS_SHA256))
def test_labels_leave_the_sampled_points_unchanged(index: int, seed: int) -> None:
    mesh, _, cloud = sampled(index, seed)
    assert rounded_sha256(cloud.points, 5) == POINTS_SHA256[index, seed]
    assert cloud.parts is not None and cloud.parts.shape == (2048,) and cloud.part_names == mesh.part_names


def _normal(mesh: MeshData, part: int) -> np.ndarray:
    """The area-weighted mean normal of a part's faces, unit length."""
    tri = mesh.vertices[mesh.faces[mesh.face_parts == part]]
    total = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]).sum(axis=0)
    return total / np.linalg.norm(total)


@pytest.mark.parametrize("family", ["cone", "pyramid"])
def test_base_is_the_flat_bottom_and_side_the_rest(family: str) -> None:
    base, side = PART_NAMES[family].index("base"), PART_NAMES[family].index("side")
    for seed in range(3):
        for index in range(FAMILIES.index(family), 10 * N_FAMILIES, N_FAMILIES):
            mesh, _, cloud = sampled(index, seed)
            z = cloud.points[:, 2].astype(np.float64)
            height = (z - z.min()) / np.ptp(z)
            # Not ~0: the pose tilts the shape by up to 10 degrees.
            assert height[cloud.parts == base].max() < 0.3, (index, seed)
            assert (height[cloud.parts == side] > 0.3).mean() > 0.4, (index, seed)
            assert _normal(mesh, base)[2] < -0.95 and _normal(mesh, side)[2] > 0.95, (index, seed)


@pytest.mark.parametrize(("family", "upper", "lower"), [
    ("table", "top", "leg"), ("stool", "seat", "leg"), ("lamp", "shade", "base"),
    ("mushroom", "cap", "stem"), ("bottle", "neck", "body"),
])
def test_parts_stack_as_named(family: str, upper: str, lower: str) -> None:
    """Every point of the upper part lies above the lower part's average height."""
    names = PART_NAMES[family]
    for index in range(FAMILIES.index(family), 10 * N_FAMILIES, N_FAMILIES):
        _, _, cloud = sampled(index, seed=1)
        z = cloud.points[:, 2]
        assert z[cloud.parts == names.index(upper)].min() > z[cloud.parts == names.index(lower)].mean(), index


def test_ring_walls_and_capsule_ends_are_where_their_names_say() -> None:
    ring = FAMILIES.index("ring")
    for index in range(ring, 10 * N_FAMILIES, N_FAMILIES):
        _, _, cloud = sampled(index, seed=2)
        p, names = cloud.points.astype(np.float64), PART_NAMES["ring"]
        radius = np.linalg.norm(p[:, :2] - p[:, :2].mean(axis=0), axis=1)
        inner, outer = cloud.parts == names.index("inner"), cloud.parts == names.index("outer")
        assert radius[inner].max() < radius[outer].min(), index
    capsule = FAMILIES.index("capsule")
    for index in range(capsule, 10 * N_FAMILIES, N_FAMILIES):
        mesh, _, cloud = sampled(index, seed=2)
        p = cloud.points.astype(np.float64) - cloud.points.mean(axis=0)
        axis = np.linalg.svd(p, full_matrices=False)[2][0]  # the pill's long axis
        along = np.abs(p @ axis)
        body, end = cloud.parts == 0, cloud.parts == 1
        assert np.quantile(along[end], 0.05) > np.quantile(along[body], 0.95) * 0.9, index
        assert along[end].max() > along[body].max(), index


def test_the_source_hash_covers_the_labels(monkeypatch: pytest.MonkeyPatch) -> None:
    import sharding.sources.synthetic as synthetic_source
    from sharding.sources.base import SourceSpec

    reader = synthetic_source.SyntheticReader(SourceSpec("synthetic", "3"))
    refs = list(reader.list_inputs())
    before = [loaded.raw_sha256 for _, loaded in reader.load(refs)]

    def relabelled(index: int, seed: int):
        mesh, family = generate_shape(index, seed)
        mesh.face_parts = mesh.face_parts[::-1].copy()
        return mesh, family

    monkeypatch.setattr(synthetic_source, "generate_shape", relabelled)
    after = [loaded.raw_sha256 for _, loaded in reader.load(refs)]
    assert all(len(h) == 64 for h in before) and not set(before) & set(after)


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """32 synthetic shapes of 1024 points in 4 shards, by the sharding job (read-only: copy to modify)."""
    out = tmp_path_factory.mktemp("parts") / "out"
    assert shard_corpus(["--source", "synthetic:32", "--output", str(out), "--num-points", "1024",
                         "--shard-size", "8", "--in-process", "--no-progress"]) == 0
    return out


def test_shards_carry_each_point_s_part(shards: Path) -> None:
    """Every sample reads back with the parts and part names that make_points gives for its key."""
    manifest = load_manifest(str(shards))
    store = ShardStore()
    try:
        samples = [store.sample(shard, i) for shard in manifest.shards
                   for i in range(store.num_samples(shard))]
    finally:
        store.close()
    assert len(samples) == 32
    for sample in samples:
        family = sample.meta["label"]
        assert sample.meta["part_names"] == list(PART_NAMES[family])
        assert sample.parts.shape == (1024,) and sample.parts.dtype == np.uint8
        mesh, _ = generate_shape(int(sample.meta["uid"]), 0)
        cloud = make_points(Loaded(mesh, "", False), sample.key, SampleSpec(num_points=1024))
        np.testing.assert_array_equal(sample.points, cloud.points)
        np.testing.assert_array_equal(sample.parts, cloud.parts)
    assert sum(len(np.unique(s.parts)) >= 2 for s in samples) >= 24
    with tarfile.open(manifest.shards[0].url) as tar:
        names = tar.getnames()
    key = samples[0].key
    assert names[:4] == [f"{key}.points.npy", f"{key}.parts.npy", f"{key}.json",
                         f"{samples[1].key}.points.npy"]  # a sample's members adjacent


def _replace_member(path: Path, name: str, data: bytes) -> None:
    """Rewrite the tar at `path` with member `name` holding `data`, the others unchanged."""
    with tarfile.open(path) as tar:
        members = [(info, tar.extractfile(info).read()) for info in tar.getmembers()]
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for info, content in members:
            content = data if info.name == name else content
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))


@pytest.mark.parametrize(("parts", "reason"), [
    (np.zeros(1000, np.uint8), r"parts\.npy is uint8 \(1000,\), expected integers \(1024,\)"),
    (np.zeros((1024, 1), np.uint8), r"parts\.npy is uint8 \(1024, 1\), expected integers \(1024,\)"),
    (np.zeros(1024, np.float32), r"parts\.npy is float32 \(1024,\), expected integers \(1024,\)"),
    (None, r"parts\.npy: not a \.npy file"),
], ids=["length", "shape", "dtype", "not-npy"])
def test_bad_parts_member_names_the_sample(shards: Path, tmp_path: Path, parts: np.ndarray | None,
                                           reason: str) -> None:
    shard = load_manifest(str(shards)).shards[0]
    copy = tmp_path / "shard.tar"
    shutil.copyfile(shard.url, copy)
    with tarfile.open(copy) as tar:
        key = tar.getnames()[3].split(".")[0]  # the second sample
    buffer = io.BytesIO()
    if parts is not None:
        np.save(buffer, parts)
    _replace_member(copy, f"{key}.parts.npy", buffer.getvalue() or b"garbage!" * 4)
    store = ShardStore()
    try:
        rewritten = ShardInfo(str(copy), shard.nsamples, filesize=None, sha256=None)
        assert store.sample(rewritten, 0).parts.shape == (1024,)  # the other samples still read
        with pytest.raises(ShardError, match=f"sample {key}: {reason}"):
            store.sample(rewritten, 1)
    finally:
        store.close()
