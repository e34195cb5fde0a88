"""The OFF reader: header forms, polygons, colours, point-only files, and a sentence for each broken file."""

from __future__ import annotations

import io

import numpy as np
import pytest
import trimesh

from sharding.decoders.off import read
from sharding.records import MeshData, PointData, ShapeError
from tests.sharding.mutations import assert_well_formed, mutations

SQUARE = "0 0 0\n1 0 0\n1 1 0\n0 1 0\n"


def triangles(geometry: MeshData) -> list[tuple[int, int, int]]:
    return [tuple(int(i) for i in face) for face in geometry.faces]


def test_a_box_has_trimesh_vertices_and_faces():
    data = trimesh.creation.box().export(file_type="off").encode()
    ours = read(data, "box.off")
    theirs = trimesh.load(io.BytesIO(data), file_type="off", process=False)
    assert isinstance(ours, MeshData) and ours.vertices.dtype == np.float64 and ours.faces.dtype == np.int64
    np.testing.assert_array_equal(ours.vertices, theirs.vertices)
    np.testing.assert_array_equal(ours.faces, theirs.faces)


def test_a_sphere_reads_as_trimesh_reads_it():
    data = trimesh.creation.icosphere(subdivisions=2).export(file_type="off").encode()
    ours = read(data, "sphere.off")
    theirs = trimesh.load(io.BytesIO(data), file_type="off", process=False)
    np.testing.assert_allclose(ours.vertices[ours.faces], np.asarray(theirs.vertices)[theirs.faces])


@pytest.mark.parametrize("header", ["OFF\n4 3 0\n", "OFF 4 3 0\n", "OFF4 3 0\n", "OFF\n4 3\n", "# made by hand\nOFF\n\n4 3 0\n",
                                    "COFF\n4 3 0\n", "NOFF\r\n4 3 0\r\n", "CNOFF\n4 3 0\n", "STOFF 4 3 0\n"])
def test_header_forms_and_polygons_of_any_size(header):
    faces = "3 0 1 2\n4 0 1 2 3\n5 0 1 2 3 1 255 0 0\n"
    text = header + SQUARE + faces
    if "\r\n" in header:
        text = text.replace("\n", "\r\n")
    assert triangles(read(text.encode(), "polygons.off")) == [
        (0, 1, 2), (0, 1, 2), (0, 2, 3), (0, 1, 2), (0, 2, 3), (0, 3, 1)]


def test_vertex_extras_comments_and_float_colours_are_skipped():
    text = "COFF\n3 1 0\n0 0 0 255 0 0 255\n1 0 0 0 255 0 255 # red\n0 1 0 0 0 255 255\n3 0 1 2 0.5 0.5 0.5\n"
    geometry = read(text.encode(), "colours.off")
    assert triangles(geometry) == [(0, 1, 2)]
    np.testing.assert_array_equal(geometry.vertices, [[0, 0, 0], [1, 0, 0], [0, 1, 0]])


def test_vertex_lines_may_differ_in_what_follows_the_coordinates():
    text = "OFF\n4 1 0\n0 0 0\n1 0 0 255 0 0\n1 1 0 0 0 1 0.5 0.5\n0 1 0\n4 3 2 1 0\n"
    geometry = read(text.encode(), "ragged.off")
    np.testing.assert_array_equal(geometry.vertices, [[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]])
    assert triangles(geometry) == [(3, 2, 1), (3, 1, 0)]


def test_a_file_of_vertices_is_a_point_cloud():
    cloud = read(("OFF\n4 0 0\n" + SQUARE).encode(), "scan.off")
    assert isinstance(cloud, PointData) and cloud.points.shape == (4, 3)


@pytest.mark.parametrize(
    ("text", "sentence"),
    [
        ("", "it is empty"),
        ("PLY\n4 1 0\n" + SQUARE, "it does not start with an OFF keyword"),
        ("OFF BINARY\n", "binary OFF is not supported"),
        ("4OFF\n4 1 0\n0 0 0 1\n1 0 0 1\n1 1 0 1\n0 1 0 1\n3 0 1 2\n",
         r"4OFF and nOFF files \(vertices that are not 3D points\) are not supported"),
        ("OFF\n0 0 0\n", "the file holds no vertices"),
        ("OFF\n4 1 0\n" + SQUARE + "999999999999999999995 0 1 2\n", ("face 1 does not list the corners its count "
                                                                     "announces")),
        ("OFF\n4 2 0\n" + SQUARE + "3 0 1 2\n4 0 1 2 -3\n", (r"face 2 refers to a vertex that does not exist \(the "
                                                             r"file has 4 vertices\)")),
        ("OFF\n4 1 0\n" + SQUARE.replace("1 1 0", "1 x 0") + "3 0 1 2\n",
         "a vertex line holds a coordinate that is not a number"),
        ("OFF\nfour 1 0\n" + SQUARE, "its counts line does not hold the vertex and face counts"),
        ("OFF\n353535235358 6 0\n" + SQUARE, ("the header declares 353535235358 vertices and 6 faces, more than the "
                                              "4 lines after it can hold")),
        ("OFF\n4 2 0\n" + SQUARE + "3 0 1 2\n", ("the header declares 4 vertices and 2 faces, more than the 5 lines "
                                                 "after it can hold")),
        ("OFF\n3 4 0\n0 0 0\n1 0 0\n0 1 0\n0\n220\n4\n3 0 1 2\n", "face 1 has 0 corners; a face needs at least 3"),
        ("OFF\n4 1 0\n" + SQUARE + "4 0 1 2\n", "face 1 does not list the corners its count announces"),
        ("OFF\n4 1 0\n" + SQUARE + "3 0 1 7\n", (r"face 1 refers to a vertex that does not exist \(the file has 4 "
                                                 r"vertices\)")),
        ("OFF\n4 1 0\n0 0 0\n1 0\n1 1 0\n0 1 0\n3 0 1 2\n", "vertex 2 has fewer than 3 coordinates"),
        ("OFF\n4 1 0\n" + SQUARE + "3 0 one 2\n", "a face line holds something that is not a number"),
    ],
)
def test_broken_files_get_a_sentence(text, sentence):
    with pytest.raises(ShapeError, match=f"^decode: broken.off: {sentence}$") as caught:
        read(text.encode(), "broken.off")
    assert caught.value.stage == "decode"


def test_mutated_files_are_read_or_refused_with_a_foreseen_sentence():
    seeds = [trimesh.creation.box().export(file_type="off").encode(),
             ("OFF4 3 0\n" + SQUARE + "3 0 1 2\n4 0 1 2 3\n5 0 1 2 3 1 255 0 0\n").encode(),
             b"COFF\n3 1 0\n0 0 0 255 0 0 255\n1 0 0 0 255 0 255 # red\n0 1 0 0 0 255 255\n3 0 1 2 0.5 0.5 0.5\n"]
    refused = 0
    for data in mutations(seeds, 3000):
        try:
            assert_well_formed(read(data, "mutated.off"))
        except ShapeError as err:
            assert err.stage == "decode" and "does not parse as OFF" not in err.reason, err.reason
            refused += 1
    assert 2000 < refused < 3000  # most mutations break the file, some leave it readable
