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

# sha256 of vertices then faces, computed with the generator before it labelled parts: labelling must not
# move a vertex or take a random draw.
GEOMETRY_SHA256 = {
    (0, 0): "01e13d79fa8fc51edfd749e6b69b3d70c74e634f78e0818f684ffb2503074106",  # table
    (1, 0): "4b6c1c994f4c103c112bcdfa4ff4a225a809542d84c29d651246bafd5d0e5447",  # stool
    (2, 0): "ae089ab9ca6ba8c54e6dcfe0abee4d5ba84f525c9e1b3a33fb47957ed1073519",  # chair
    (3, 0): "fa5effe2581d75f8e4cf67887411ad6593d7a360ee6fba5b32a3971a5a6fdd8f",  # shelf
    (4, 0): "c362de61e8f43956c14e13ced72b1261ffce5f020cb313320fb9ea96f64ebfef",  # mug
    (5, 0): "c9efa966b10f47c0000b91e245f7c3e080c50acc8ef3c97a5436b32fc7fa82fa",  # can
    (6, 0): "3cd28307881d4eec48f806b6c2a410af5ae8b14d4cb880e90fdb8bc4775312f3",  # bottle
    (7, 0): "2736e096b43461517ed1c69223eea80cf417c6b9ed5fe08a401ee91440dd8a89",  # bowl
    (8, 0): "f37d1c34e776e77a1964b801198900cbe34e30d14c52febec9c612552da960fe",  # torus
    (9, 0): "997b0d67552b0f754ee2915f1231301e007434b7db877cc1f11a5fbfb93b5861",  # ring
    (10, 0): "f9b99334f74c659c14c9e073c5ae7bf6ce696c98ff15e0939e166f0d6e04b49f",  # cone
    (11, 0): "6a53aeffe540520f53320ed16c47a0cdb1902510506b406e3e74c6580d61cd3b",  # pyramid
    (12, 0): "dc9a20f7c0a22d695c0e72e5e2d3ff20999c9a15cb5a247c1695fbb2fedc00a0",  # lamp
    (13, 0): "b4a74e498564f9051eca8d028ade592c96eed6fa7661b49b9b30ba429d411f35",  # mushroom
    (14, 0): "ce775e0bcebaca0e85a2b7db5da5fb94250c5d06b086720f8e0a9b3e13755842",  # dumbbell
    (15, 0): "e0527dfd42f227992f6563cea7727a99e3522a937441bb315c9482aeec995784",  # capsule
    (21, 5): "2c61f65d126bb84bc327582cc0e30383b87247adc4739032119cdf1be9262255",  # can
    (40, 3): "8e4624d7f701c2f761de57b18dea47d1fe1024d70bc76e26ffd63d4a030d1715",  # torus
    (63, 11): "5fcbce74b4ae0326e5f796e4728a8ca422cb8698154f42ca4751553983697dea",  # capsule
}
# sha256 of make_points(...).points (2048 float32 points, key "synthetic_<index>"), also from before.
POINTS_SHA256 = {
    (2, 0): "bc965e858de2a39acf57750d14b343563c8b8d40393702724c7d0edb3ec57cf9",  # chair
    (10, 0): "80f8446630f6d531c7969dd475cd8282a9efc5d0b4c13ff0c09bbdc153c8de79",  # cone
    (27, 4): "306cf830df0e748b81e35263938ba2004b03ae826f7e20e80cb6c878cbfb7bbc",  # pyramid
}


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
    digest = hashlib.sha256(mesh.vertices.tobytes() + mesh.faces.tobytes()).hexdigest()
    assert digest == GEOMETRY_SHA256[index, seed]


@pytest.mark.parametrize(("index", "seed"), sorted(POINTS_SHA256))
def test_labels_leave_the_sampled_points_unchanged(index: int, seed: int) -> None:
    mesh, _, cloud = sampled(index, seed)
    assert hashlib.sha256(cloud.points.tobytes()).hexdigest() == POINTS_SHA256[index, seed]
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
