"""Garbage does not become a sample: decoded counts must match the counts a header declares, and a stored
cloud needs enough points for a global crop."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from model.config import PatchifyConfig
from pipeline.config import MultiCropConfig
from sharding.config import ShardingConfig
from sharding.meshio import decode_geometry
from sharding.records import Loaded, MeshData, PointData, ShapeError
from sharding.sampling import SampleSpec, make_points

PLY_HEADER = ("ply\nformat ascii 1.0\nelement vertex {v}\nproperty float x\nproperty float y\nproperty float z\n"
              "element face {f}\nproperty list uchar int vertex_indices\nend_header\n")
THREE_VERTICES = "0 0 0\n1 0 0\n0 1 0\n"


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("huge.ply", PLY_HEADER.format(v=10**9, f=1) + THREE_VERTICES + "3 0 1 2\n",
         "the header declares 1000000000 vertices, the data holds 4"),
        ("short.ply", PLY_HEADER.format(v=5, f=1) + THREE_VERTICES + "3 0 1 2\n",
         "the header declares 5 vertices, the data holds 4"),
        ("faces.ply", PLY_HEADER.format(v=3, f=4) + THREE_VERTICES + "3 0 1 2\n",
         "the header declares 4 faces, the data holds 1"),
        ("face-as-vertex.off", "OFF\n4 2 0\n" + THREE_VERTICES + "3 0 1 2\n",
         "the header declares 4 vertices and 2 faces, more than the 4 lines after it can hold"),
        ("glued.off", "OFF4 2 0\n" + THREE_VERTICES + "3 0 1 2\n",
         "the header declares 4 vertices and 2 faces, more than the 4 lines after it can hold"),
    ],
)
def test_counts_short_of_the_header_are_a_decode_error(name, text, message):
    with pytest.raises(ShapeError, match=message) as caught:
        decode_geometry(text.encode(), name)
    assert caught.value.stage == "decode"


@pytest.mark.parametrize(("file_type", "encoding"), [("ply", "ascii"), ("ply", "binary"), ("off", None)])
def test_well_formed_files_keep_their_counts(file_type, encoding):
    options = {"encoding": encoding} if encoding else {}
    data = trimesh.creation.box().export(file_type=file_type, **options)
    mesh = decode_geometry(data if isinstance(data, bytes) else data.encode(), f"box.{file_type}")
    assert isinstance(mesh, MeshData) and (len(mesh.vertices), len(mesh.faces)) == (8, 12)


def test_quads_and_point_only_files_pass():
    quads = "OFF\n4 1 0\n0 0 0\n1 0 0\n1 1 0\n0 1 0\n4 0 1 2 3\n"
    mesh = decode_geometry(quads.encode(), "quad.off")
    assert isinstance(mesh, MeshData) and len(mesh.faces) == 2  # one quad, two triangles
    points = PLY_HEADER.replace("element face {f}\nproperty list uchar int vertex_indices\n", "").format(v=3)
    cloud = decode_geometry((points + THREE_VERTICES).encode(), "cloud.ply")
    assert isinstance(cloud, PointData) and cloud.points.shape == (3, 3)


def test_min_points_default_is_one_global_crop():
    """A global crop of the default pipeline has 1024 points in 64 patches: a smaller cloud is the whole crop."""
    crop = MultiCropConfig().global_crops.points
    assert ShardingConfig().min_points == SampleSpec().min_points == crop >= PatchifyConfig().global_patches
    cloud = Loaded(PointData(np.random.default_rng(0).normal(size=(crop - 1, 3))), "0" * 64, False)
    with pytest.raises(ShapeError, match=f"{crop - 1} points < min_points {crop}"):
        make_points(cloud, "k", SampleSpec())
    assert "fewer points" in ShardingConfig.model_fields["min_points"].description


def test_min_points_is_capped_at_num_points():
    """Every stored cloud has at most num_points points: a job storing fewer needs no more than that."""
    rng = np.random.default_rng(0)
    spec = SampleSpec(num_points=256)
    cloud = make_points(Loaded(PointData(rng.normal(size=(300, 3))), "0" * 64, False), "k", spec)
    assert cloud.points.shape == (256, 3)
    with pytest.raises(ShapeError, match="200 points < min_points 256"):
        make_points(Loaded(PointData(rng.normal(size=(200, 3))), "0" * 64, False), "k", spec)
