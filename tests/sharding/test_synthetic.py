"""The synthetic source: deterministic, balanced, valid meshes whose families differ in shape."""

from __future__ import annotations

import hashlib
import json
from collections import Counter

import numpy as np
import pytest

import sharding.sources.synthetic as synthetic_source
from sharding.records import InputRef, Loaded, MeshData, ShapeError
from sharding.sources.base import SourceSpec
from sharding.sources.synthetic import SyntheticReader
from sharding.synthetic import FAMILIES, generate_shape

N_FAMILIES = len(FAMILIES)


def reader(count: str | int, **options: object) -> SyntheticReader:
    return SyntheticReader(SourceSpec("synthetic", str(count), options=dict(options)))


def differ(a: MeshData, b: MeshData) -> bool:
    return a.vertices.shape != b.vertices.shape or not np.allclose(a.vertices, b.vertices)


def test_there_are_enough_distinct_families() -> None:
    assert N_FAMILIES >= 10
    assert len(set(FAMILIES)) == N_FAMILIES


def test_generation_is_deterministic_per_seed_and_index() -> None:
    for index in (0, 7, N_FAMILIES + 3):
        a, family_a = generate_shape(index, seed=5)
        b, family_b = generate_shape(index, seed=5)
        assert family_a == family_b == FAMILIES[index % N_FAMILIES]
        np.testing.assert_array_equal(a.vertices, b.vertices)
        np.testing.assert_array_equal(a.faces, b.faces)
        assert differ(a, generate_shape(index, seed=6)[0])
    assert differ(generate_shape(0, seed=5)[0], generate_shape(N_FAMILIES, seed=5)[0])  # same family


def test_every_family_gives_valid_unit_size_meshes() -> None:
    for index in range(3 * N_FAMILIES):
        mesh, family = generate_shape(index, seed=0)
        v, f = mesh.vertices, mesh.faces
        assert v.dtype == np.float64 and v.ndim == 2 and v.shape[1] == 3, family
        assert f.dtype == np.int64 and f.ndim == 2 and f.shape[1] == 3, family
        assert np.isfinite(v).all(), family
        assert f.min() >= 0 and f.max() < len(v), family
        assert 200 <= len(f) <= 5000, (family, len(f))
        tri = v[f]
        area = np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1).sum() / 2
        assert area > 0.05, family
        assert 0.5 < np.ptp(v, axis=0).max() < 2.0, family


def test_listing_is_balanced_and_labelled() -> None:
    count = 5 * N_FAMILIES + 3
    refs = list(reader(count).list_inputs())
    assert [r.uid for r in refs] == [f"{i:07d}" for i in range(count)]
    assert all(r.container == "synthetic" and r.member == "" and r.kind == "synthetic" for r in refs)
    assert all(r.label == r.category == FAMILIES[i % N_FAMILIES] for i, r in enumerate(refs))
    counts = Counter(r.label for r in refs)
    assert set(counts) == set(FAMILIES)
    assert max(counts.values()) - min(counts.values()) <= 1


def test_listing_generates_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(index: int, seed: int) -> tuple[MeshData, str]:
        raise AssertionError("listing must not generate shapes")

    monkeypatch.setattr(synthetic_source, "generate_shape", refuse)
    assert sum(1 for _ in reader(100_000).list_inputs()) == 100_000


@pytest.mark.parametrize("count", ["0", "-3", "abc", "1.5", "1e3", "", " ", "²"])
def test_bad_count_is_rejected(count: str) -> None:
    with pytest.raises(ValueError, match="positive number of shapes"):
        reader(count)


@pytest.mark.parametrize("seed", [-1, "3", 1.5, True])
def test_bad_seed_is_rejected(seed: object) -> None:
    with pytest.raises(ValueError, match="seed"):
        reader(4, seed=seed)


def test_load_generates_each_ref_and_hashes_the_arrays() -> None:
    refs = list(reader(N_FAMILIES + 2, seed=3).list_inputs())
    results = list(reader(N_FAMILIES + 2, seed=3).load(refs))
    assert [r for r, _ in results] == refs
    for i, (ref, loaded) in enumerate(results):
        assert isinstance(loaded, Loaded) and isinstance(loaded.geometry, MeshData)
        assert loaded.y_up is False
        expected, _ = generate_shape(i, seed=3)
        np.testing.assert_array_equal(loaded.geometry.vertices, expected.vertices)
        np.testing.assert_array_equal(loaded.geometry.faces, expected.faces)
        np.testing.assert_array_equal(loaded.geometry.face_parts, expected.face_parts)
        assert loaded.geometry.part_names == expected.part_names
        arrays = expected.vertices.tobytes() + expected.faces.tobytes() + expected.face_parts.tobytes()
        digest = hashlib.sha256(arrays + json.dumps(expected.part_names).encode()).hexdigest()
        assert loaded.raw_sha256 == digest
    other = [loaded.raw_sha256 for _, loaded in reader(N_FAMILIES + 2, seed=4).load(refs)]
    assert not set(other) & {loaded.raw_sha256 for _, loaded in results}


def test_load_reports_failures_per_ref() -> None:
    r = reader(3)
    good = next(iter(r.list_inputs()))
    bad_uid = InputRef("synthetic", "synthetic", "synthetic", "", "not-a-number", label="table")
    wrong_label = InputRef("synthetic", "synthetic", "synthetic", "", "0000001", label="table")
    results = dict(r.load([bad_uid, good, wrong_label]))
    assert isinstance(results[bad_uid], ValueError)
    assert isinstance(results[good], Loaded)
    assert isinstance(results[wrong_label], ShapeError) and results[wrong_label].stage == "load"


def _descriptor(mesh: MeshData, rng: np.random.Generator, n: int = 1024) -> np.ndarray:
    """Rotation- and scale-invariant: PCA eigenvalue ratios and the histogram of distances to the centroid."""
    tri = mesh.vertices[mesh.faces]
    area = np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    t = tri[rng.choice(len(tri), n, p=area / area.sum())]
    uv = rng.random((n, 2))
    flip = uv.sum(axis=1) > 1
    uv[flip] = 1 - uv[flip]
    points = t[:, 0] + uv[:, :1] * (t[:, 1] - t[:, 0]) + uv[:, 1:] * (t[:, 2] - t[:, 0])
    points -= points.mean(axis=0)
    eig = np.sort(np.linalg.eigvalsh(np.cov(points.T)))[::-1]
    dist = np.linalg.norm(points, axis=1)
    hist = np.histogram(dist / dist.mean(), bins=12, range=(0.0, 2.5))[0] / n
    return np.concatenate([eig[1:] / eig[0], hist])


def test_families_differ_in_shape_but_not_trivially() -> None:
    """Nearest-centroid on a crude shape descriptor: far above chance, yet far from perfect.

    Far above chance means the families really differ in shape (every mesh is rescaled, so not in
    size); far from perfect means look-alike families (mug/can, torus/ring, cone/pyramid, ...) need
    finer structure than a global descriptor sees, which is what pretraining should pick up.
    """
    per_family = 40
    rng = np.random.default_rng(0)
    count = per_family * N_FAMILIES
    x = np.array([_descriptor(generate_shape(i, seed=0)[0], rng) for i in range(count)])
    y = np.arange(count) % N_FAMILIES
    train = np.arange(count) < count // 2
    z = (x - x[train].mean(axis=0)) / (x[train].std(axis=0) + 1e-9)
    centroids = np.array([z[train & (y == c)].mean(axis=0) for c in range(N_FAMILIES)])
    predicted = np.argmin(((z[~train, None] - centroids[None]) ** 2).sum(axis=-1), axis=1)
    accuracy = float((predicted == y[~train]).mean())
    print(f"nearest-centroid accuracy {accuracy:.3f}, {N_FAMILIES} families, chance {1 / N_FAMILIES:.3f}")
    assert 0.5 < accuracy < 0.95


def test_split_option_puts_a_held_out_corpus_in_its_own_split() -> None:
    assert {r.split for r in reader(5).list_inputs()} == {"train"}
    assert {r.split for r in reader(5, split="test").list_inputs()} == {"test"}
    with pytest.raises(ValueError, match="split"):
        reader(5, split="../x")
