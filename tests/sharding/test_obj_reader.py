"""The OBJ reader: every corner form, polygons, point-only files, and a sentence for each broken file."""

from __future__ import annotations

import io

import numpy as np
import pytest
import trimesh

from sharding.decoders.obj import read
from sharding.records import MeshData, PointData, ShapeError

SQUARE = "v 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\n"


def triangles(geometry: MeshData) -> list[tuple[int, int, int]]:
    return [tuple(int(i) for i in face) for face in geometry.faces]


@pytest.mark.parametrize("normals", [False, True])
def test_a_box_reads_as_trimesh_reads_it(normals):
    box = trimesh.creation.box(extents=(1.0, 2.0, 3.0))
    data = box.export(file_type="obj", include_normals=normals, include_texture=False).encode()
    ours = read(data, "box.obj")
    theirs = trimesh.load(io.BytesIO(data), file_type="obj", process=False, force="mesh")
    assert isinstance(ours, MeshData) and ours.faces.shape == (12, 3)
    np.testing.assert_allclose(ours.vertices[ours.faces], np.asarray(theirs.vertices)[theirs.faces])


@pytest.mark.parametrize("corner", ["{v}", "{v}/{v}", "{v}//{v}", "{v}/{v}/{v}"])
def test_every_corner_form_gives_the_same_faces(corner):
    faces = "".join("f " + " ".join(corner.format(v=v) for v in face) + "\n" for face in ((1, 2, 3), (1, 3, 4)))
    geometry = read((SQUARE + "vt 0 0\nvn 0 0 1\n" + faces).encode(), "square.obj")
    assert triangles(geometry) == [(0, 1, 2), (0, 2, 3)]


def test_polygons_of_any_size_are_fan_triangulated():
    text = SQUARE + "v 2 0 0\nv 3 1 0\nf 1 2 3\nf 1 2 3 4\nf 1 2 5 6 3\n"
    assert triangles(read(text.encode(), "mixed.obj")) == [
        (0, 1, 2), (0, 1, 2), (0, 2, 3), (0, 1, 4), (0, 4, 5), (0, 5, 2)]


def test_mixed_corner_forms_and_comments_take_the_line_path():
    text = SQUARE + "vt 0 0\nf 1/1 2 3  # a comment\nf 1//1 3/1/1 4\n"
    assert triangles(read(text.encode(), "mixed-forms.obj")) == [(0, 1, 2), (0, 2, 3)]


def test_negative_indices_count_back_from_the_latest_vertex():
    text = "v 0 0 0\nv 1 0 0\nv 0 1 0\nf -3 -2 -1\nv 5 5 5\nf -4 -3 -1\n"
    assert triangles(read(text.encode(), "relative.obj")) == [(0, 1, 2), (0, 1, 3)]


def test_vertex_extras_and_layout_variants_are_read():
    """w or colour values after x y z, CRLF, tabs, indentation, line continuation, UTF-16 with a BOM."""
    text = "v 0 0 0 1\nv 1 0 0 0.5 0.5 0.5\n  v\t0 1 0\nf 1 2 \\\n 3\n"
    want = [(0, 1, 2)]
    for data in (text.encode(), text.replace("\n", "\r\n").encode(), text.encode("utf-16")):
        geometry = read(data, "variants.obj")
        assert triangles(geometry) == want
        np.testing.assert_array_equal(geometry.vertices, [[0, 0, 0], [1, 0, 0], [0, 1, 0]])


def test_a_file_of_vertices_is_a_point_cloud():
    cloud = read((SQUARE + "p 1 2 3 4\nl 1 2\n").encode(), "scan.obj")
    assert isinstance(cloud, PointData)
    np.testing.assert_array_equal(cloud.points, [[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]])


def test_the_same_bytes_give_the_same_arrays():
    data = trimesh.creation.icosphere(subdivisions=3).export(file_type="obj").encode()
    a, b = read(data, "a.obj"), read(data, "a.obj")
    assert a.vertices.tobytes() == b.vertices.tobytes() and a.faces.tobytes() == b.faces.tobytes()


@pytest.mark.parametrize(
    ("text", "sentence"),
    [
        ("", "it is empty"),
        ("# only a comment\nvt 0 0\n", r"it holds no vertices \('v' lines\)"),
        (SQUARE + "f 1 2\n", "face 1 has 2 corners; a face needs at least 3"),
        (SQUARE + "f 1 2 3\nf 0 1 2\n", "face 2 refers to vertex 0; OBJ vertex indices start at 1"),
        (SQUARE + "f 1 2 3\nf 1 2 9\n", r"face 2 refers to a vertex that does not exist \(the file has 4 vertices\)"),
        (SQUARE + "f -5 1 2\n", r"face 1 refers to a vertex that does not exist \(the file has 4 vertices\)"),
        ("v 0 0 0\nv 1 0\nv 0 1 0\nf 1 2 3\n", "vertex 2 has fewer than 3 coordinates"),
        ("v 0 0 0\nv 1 0 zero\nv 0 1 0\nf 1 2 3\n", "a vertex line holds a coordinate that is not a number"),
        (SQUARE + "f 1 2 x\n", "face 1 has a corner that is not a vertex index"),
    ],
)
def test_broken_files_get_a_sentence(text, sentence):
    with pytest.raises(ShapeError, match=f"^decode: broken.obj: {sentence}$") as caught:
        read(text.encode(), "broken.obj")
    assert caught.value.stage == "decode"
