"""The stored point cloud: deterministic per key, uniform over the surface, Z-up, strict about bad input."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from sharding.records import Loaded, MeshData, PointData, ShapeError
from sharding.sampling import SampleSpec, make_points, sample_surface, seed_from_key


def _mesh(vertices, faces, y_up: bool = False) -> Loaded:
    return Loaded(MeshData(np.asarray(vertices, np.float64), np.asarray(faces, np.int64)), "0" * 64, y_up)


def _cloud(points, y_up: bool = False) -> Loaded:
    return Loaded(PointData(np.asarray(points, np.float64)), "0" * 64, y_up)


def _sphere(subdivisions: int = 3) -> Loaded:
    sphere = trimesh.creation.icosphere(subdivisions)
    return _mesh(sphere.vertices, sphere.faces)


def _within(count: int, n: int, p: float, sigmas: float = 5.0) -> bool:
    """`count` successes out of `n` is within `sigmas` binomial standard deviations of n * p."""
    return abs(count - n * p) <= sigmas * np.sqrt(n * p * (1 - p))


# Two triangles of area 0.5 (z = 0) and 1.5 (z = 1), and zero-area faces first, between and last (z = 5).
TWO_TRIANGLES = (
    [[0, 0, 0], [1, 0, 0], [0, 1, 0]]
    + [[0, 0, 1], [3**0.5, 0, 1], [0, 3**0.5, 1]]
    + [[0, 0, 5], [1, 0, 5], [2, 0, 5]],
    [[6, 7, 8], [0, 1, 2], [6, 8, 7], [3, 4, 5], [7, 7, 7]],
)


def test_seed_from_key_is_stable_and_64_bit():
    # A golden value: changing the derivation would silently change every shard ever written.
    assert seed_from_key("modelnet40_chair_0001") == 0xC38CC4C88392F6F2
    seeds = {seed_from_key(f"key{i}") for i in range(1000)}
    assert len(seeds) == 1000 and all(0 <= s < 2**64 for s in seeds)
    assert seed_from_key("abc") == seed_from_key("abc")


def test_mesh_sampling_is_deterministic_per_key():
    spec = SampleSpec(num_points=2048)
    first = make_points(_sphere(), "src_a", spec).points
    assert first.shape == (2048, 3) and first.dtype == np.float32
    assert make_points(_sphere(), "src_a", spec).points.tobytes() == first.tobytes()
    assert make_points(_sphere(), "src_b", spec).points.tobytes() != first.tobytes()


def test_area_weighted_split_and_zero_area_faces():
    vertices, faces = (np.asarray(a) for a in TWO_TRIANGLES)
    n = 200_000
    points, chosen = sample_surface(vertices.astype(np.float64), faces, n, np.random.default_rng(0))
    assert points.shape == (n, 3) and points.dtype == np.float64
    on_small, on_large = points[:, 2] == 0, np.abs(points[:, 2] - 1) < 1e-12
    assert (on_small | on_large).all()  # nothing on the zero-area faces at z = 5
    assert (chosen[on_small] == 1).all() and (chosen[on_large] == 3).all()  # the face each point lies on
    assert _within(int(on_large.sum()), n, 0.75)
    small, large = points[on_small], points[on_large] / [3**0.5, 3**0.5, 1]
    for tri in (small, large):  # inside the triangle x, y >= 0, x + y <= 1
        assert (tri[:, :2] >= 0).all() and (tri[:, 0] + tri[:, 1] <= 1 + 1e-12).all()
    # Uniform inside a triangle: the corner x + y < t holds a fraction t^2 of its area.
    inner = small[:, 0] + small[:, 1] < 0.5
    assert _within(int(inner.sum()), len(small), 0.25)


def test_unit_sphere_samples_are_centred_on_the_surface():
    points = make_points(_sphere(4), "sphere", SampleSpec()).points.astype(np.float64)
    radii = np.linalg.norm(points, axis=1)
    assert radii.max() <= 1 + 1e-6 and radii.min() > 0.99  # faces are chords of the unit sphere
    assert np.abs(points.mean(axis=0)).max() < 0.03  # 6 standard errors of a mean of 16,384 points
    octant = (points > 0) @ [1, 2, 4]
    assert all(_within(int(np.sum(octant == k)), len(points), 1 / 8) for k in range(8))


def test_y_up_sources_are_rotated_to_z_up():
    spec = SampleSpec(num_points=512)
    native = make_points(_sphere(), "k", spec).points
    rotated = make_points(Loaded(_sphere().geometry, "0" * 64, y_up=True), "k", spec).points
    np.testing.assert_array_equal(rotated, native[:, (2, 0, 1)])
    one_point = make_points(_cloud([[1, 2, 3]], y_up=True), "k", SampleSpec(num_points=512, min_points=1))
    np.testing.assert_array_equal(one_point.points, [[3, 1, 2]])


def test_large_point_clouds_are_subsampled_without_replacement():
    cloud = np.arange(3 * 5000, dtype=np.float64).reshape(5000, 3)  # every row distinct
    spec = SampleSpec(num_points=1000)
    points = make_points(_cloud(cloud), "pc", spec).points
    assert points.shape == (1000, 3)
    rows = (points[:, 0] / 3).astype(int)
    assert len(np.unique(rows)) == 1000
    np.testing.assert_array_equal(points, cloud[rows])
    assert make_points(_cloud(cloud), "pc", spec).points.tobytes() == points.tobytes()
    assert make_points(_cloud(cloud), "pc2", spec).points.tobytes() != points.tobytes()


def test_small_point_clouds_are_kept_whole_in_order():
    cloud = np.random.default_rng(1).normal(size=(1500, 3))
    points = make_points(_cloud(cloud), "pc", SampleSpec(num_points=2000)).points
    np.testing.assert_array_equal(points, cloud.astype(np.float32))


def test_float16_output():
    points = make_points(_sphere(), "k", SampleSpec(num_points=256, dtype="float16")).points
    assert points.dtype == np.float16 and points.shape == (256, 3)
    reference = make_points(_sphere(), "k", SampleSpec(num_points=256)).points
    np.testing.assert_allclose(points, reference, atol=1e-3)


def _two_boxes(face_parts=None) -> Loaded:
    """A unit box at x = -1 (part 0) and one at x = +1 (part 1), so a point's part is the sign of its x."""
    boxes = [trimesh.creation.box(transform=trimesh.transformations.translation_matrix((x, 0, 0)))
             for x in (-1, 1)]
    mesh = trimesh.util.concatenate(boxes)
    loaded = _mesh(mesh.vertices, mesh.faces)
    if face_parts is not None:
        loaded.geometry.face_parts = face_parts
        loaded.geometry.part_names = ("left", "right")
    return loaded


def test_mesh_points_carry_the_part_of_their_face():
    spec = SampleSpec(num_points=4096)
    plain = make_points(_two_boxes(), "k", spec)
    assert plain.parts is None and plain.part_names == ()
    labelled = make_points(_two_boxes(np.repeat(np.arange(2), 12)), "k", spec)
    assert labelled.points.tobytes() == plain.points.tobytes()  # the labels take no draw
    assert labelled.parts.dtype == np.uint8 and labelled.parts.shape == (4096,)
    assert labelled.part_names == ("left", "right")
    np.testing.assert_array_equal(labelled.parts, labelled.points[:, 0] > 0)
    assert _within(int(labelled.parts.sum()), 4096, 0.5)
    swapped = make_points(_two_boxes(np.repeat([1, 0], 12)), "k", spec)
    np.testing.assert_array_equal(swapped.parts, 1 - labelled.parts)
    turned = Loaded(_two_boxes(np.repeat(np.arange(2), 12)).geometry, "0" * 64, y_up=True)
    y_up = make_points(turned, "k", spec)
    np.testing.assert_array_equal(y_up.parts, labelled.parts)  # turning the cloud keeps each point's part


def test_point_clouds_have_no_parts():
    points = np.random.default_rng(0).normal(size=(2000, 3))
    cloud = make_points(_cloud(points), "pc", SampleSpec(num_points=1024))
    assert cloud.parts is None and cloud.part_names == ()


@pytest.mark.parametrize(
    ("face_parts", "reason"),
    [
        (np.zeros(23, np.int64), "face parts must be (24,) integers, got int64 (23,)"),
        (np.zeros(24, np.float32), "face parts must be (24,) integers, got float32 (24,)"),
        (np.full(24, 2), "face parts out of range [0, 2)"),
        (np.full(24, -1), "face parts out of range [0, 2)"),
    ],
    ids=["length", "dtype", "too-high", "negative"],
)
def test_bad_face_parts_are_rejected(face_parts, reason):
    with pytest.raises(ShapeError) as info:
        make_points(_two_boxes(face_parts), "k", SampleSpec(num_points=64))
    assert (info.value.stage, info.value.reason) == ("validate", reason)


FLAT = ([[0, 0, 0], [1, 0, 0], [2, 0, 0]], [[0, 1, 2], [0, 2, 1]])


@pytest.mark.parametrize(
    ("loaded", "spec", "stage", "reason"),
    [
        (_mesh([[np.nan, 0, 0], [1, 0, 0], [0, 1, np.inf]], [[0, 1, 2]]), SampleSpec(), "validate",
         "2 non-finite vertex coordinates"),
        (_mesh([[0, 0, 0], [1, 0, 0], [0, 1, 0]], [[0, 1, 2], [0, 1, 3]]), SampleSpec(), "validate",
         "1 face indices out of range [0, 3)"),
        (_mesh([[0, 0, 0], [1, 0, 0], [0, 1, 0]], [[0, 1, -1]]), SampleSpec(), "validate",
         "1 face indices out of range [0, 3)"),
        (_mesh([[0, 0, 0], [1, 0, 0], [0, 1, 0]], np.zeros((0, 3))), SampleSpec(), "validate",
         "mesh has no faces"),
        (_mesh(*FLAT), SampleSpec(), "validate", "total surface area is 0 (2 faces)"),
        (_mesh([[0, 0, 0], [1e200, 0, 0], [0, 1e200, 0]], [[0, 1, 2]]), SampleSpec(), "validate",
         "total surface area is inf (1 faces)"),
        (_cloud([[0, 0, 0], [np.nan, 1, 1]]), SampleSpec(), "validate", "1 non-finite point coordinates"),
        (_cloud(np.zeros((5, 3))), SampleSpec(min_points=10), "filter", "5 points < min_points 10"),
        (_cloud(np.zeros((0, 3))), SampleSpec(), "filter", "0 points < min_points 1024"),
        (_cloud([[7e4, 0, 0]]), SampleSpec(dtype="float16", min_points=1), "encode",
         "coordinates up to 70000 exceed the float16 range (max 65504)"),
        (_mesh([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], [[0, 1, 2]]), SampleSpec(max_vertices=3),
         "limits", "4 vertices > max_vertices 3"),
    ],
    ids=[
        "nan-vertex", "index-high", "index-negative", "no-faces", "all-degenerate", "area-overflow",
        "nan-point", "few-points", "empty-cloud", "float16-overflow", "max-vertices",
    ],
)
def test_bad_inputs_raise_with_stage(loaded: Loaded, spec: SampleSpec, stage: str, reason: str):
    with pytest.raises(ShapeError) as info:
        make_points(loaded, "bad", spec)
    assert (info.value.stage, info.value.reason) == (stage, reason)


def test_max_faces_is_checked_before_any_work():
    # A zero-stride view claims 10^12 faces in 24 bytes: validating or sampling it would never finish.
    faces = np.broadcast_to(np.zeros(3, np.int64), (10**12, 3))
    loaded = Loaded(MeshData(np.full((3, 3), np.nan), faces), "0" * 64, False)
    with pytest.raises(ShapeError) as info:
        make_points(loaded, "huge", SampleSpec(max_faces=1000))
    assert (info.value.stage, info.value.reason) == ("limits", f"{10**12} faces > max_faces 1000")


def test_mesh_at_the_face_limit_is_sampled():
    points = make_points(_mesh(*TWO_TRIANGLES), "k", SampleSpec(num_points=64, max_faces=5)).points
    assert points.shape == (64, 3)


def test_spec_rejects_unknown_dtype():
    with pytest.raises(ValueError, match="dtype"):
        SampleSpec(dtype="float64")  # type: ignore[arg-type]
