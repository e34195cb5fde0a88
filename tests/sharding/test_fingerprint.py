"""Shape fingerprints: the exact one ignores vertex order, duplicates, shift and scale; the descriptor
ignores rotation, scale and resampling but tells different shapes apart."""

from __future__ import annotations

import numpy as np
import trimesh
from scipy.spatial.transform import Rotation

from sharding.fingerprint import DESCRIPTOR_SIZE, distance, exact_fingerprint, near_pairs, shape_descriptor


def surface(mesh: trimesh.Trimesh, seed: int) -> np.ndarray:
    return trimesh.sample.sample_surface(mesh, 16384, seed=seed)[0]


def test_exact_fingerprint_is_blind_to_order_duplicates_shift_and_scale_only():
    vertices = trimesh.creation.icosphere(2).vertices
    same = np.concatenate([vertices[::-1], vertices[:10]]) * 3.0 + (1.0, -2.0, 0.5)
    assert exact_fingerprint(same) == exact_fingerprint(vertices)
    moved = vertices.copy()
    moved[0, 0] += 0.01
    assert exact_fingerprint(moved) != exact_fingerprint(vertices)


def test_descriptor_is_near_for_a_rotated_rescaled_resampled_copy_and_far_for_another_shape():
    chair_like = trimesh.util.concatenate([trimesh.creation.box(extents=(1.0, 1.0, 0.1)), trimesh.creation.box(
        extents=(0.1, 1.0, 1.0), transform=trimesh.transformations.translation_matrix((0.45, 0, 0.5)))])
    original = shape_descriptor(surface(chair_like, 0))
    copy = shape_descriptor(surface(chair_like, 1) @ Rotation.from_euler("xyz", (0.3, 1.2, -2.0)).as_matrix().T * 7)
    other = shape_descriptor(surface(trimesh.creation.icosphere(3), 0))
    assert original.shape == (DESCRIPTOR_SIZE,) and original.dtype == np.float32
    assert distance(original, copy) < 0.03 < 0.1 < distance(original, other)
    assert shape_descriptor(surface(chair_like, 0)).tobytes() == original.tobytes()


def test_near_pairs_finds_exactly_the_pairs_within_the_tolerance():
    rng = np.random.default_rng(0)
    points = rng.uniform(0, 1, size=(300, 5))
    want = {(i, j) for i in range(300) for j in range(i + 1, 300) if distance(points[i], points[j]) < 0.3}
    got = {tuple(map(int, p)) for p in near_pairs(points, 0.3)}
    assert got == want and len(want) > 10
