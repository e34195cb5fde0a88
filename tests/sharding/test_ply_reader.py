"""The PLY reader: ASCII and binary of both byte orders, skipped elements and properties, polygons,
point clouds, and a sentence for each broken file."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
import trimesh

from sharding.decoders.ply import read
from sharding.records import MeshData, PointData, ShapeError

HEAD = "ply\nformat {fmt} 1.0\n"
SQUARE = [(0, 0, 0), (1, 0, 0), (1, 1, 0), (0, 1, 0)]


def triangles(geometry: MeshData) -> list[tuple[int, int, int]]:
    return [tuple(int(i) for i in face) for face in geometry.faces]


@pytest.mark.parametrize("encoding", ["binary", "ascii"])
def test_a_sphere_reads_as_trimesh_reads_it(encoding):
    data = trimesh.creation.icosphere(subdivisions=2).export(file_type="ply", encoding=encoding)
    ours = read(data, "sphere.ply")
    theirs = trimesh.load(io.BytesIO(data), file_type="ply", process=False)
    np.testing.assert_allclose(ours.vertices[ours.faces], np.asarray(theirs.vertices)[theirs.faces])


def polygons_ascii() -> bytes:
    header = HEAD.format(fmt="ascii") + (
        "comment made by hand\nfree text an old exporter wrote\nelement vertex 4\nproperty float x\n"
        "property float y\nproperty uchar red\nproperty float z\nelement edge 1\nproperty list uchar int pair\n"
        "property int weight\nelement face 3\nproperty uchar flags\nproperty list uchar int vertex_indices\n"
        "property list uchar float texcoord\nend_header\n")
    vertices = "".join(f"{x} {y} 200 {z}\n" for x, y, z in SQUARE)
    return (header + vertices + "2 0 1 7\n" + "0 3 0 1 2 0\n1 4 0 1 2 3 2 0.5 0.5\n0 5 0 1 2 3 1 0\n").replace(
        "\n", "\r\n").encode()


def polygons_binary(order: str) -> bytes:
    header = HEAD.format(fmt={"<": "binary_little_endian", ">": "binary_big_endian"}[order]) + (
        "element vertex 4\nproperty double x\nproperty double y\nproperty double z\nproperty uchar red\n"
        "element face 3\nproperty list uchar int vertex_indices\nproperty short flags\nend_header\n")
    body = b"".join(struct.pack(order + "dddB", *v, 200) for v in SQUARE)
    for face in ((0, 1, 2), (0, 1, 2, 3), (0, 1, 2, 3, 1)):
        body += struct.pack(order + "B" + "i" * len(face) + "h", len(face), *face, 7)
    return header.encode() + body


@pytest.mark.parametrize("data", [polygons_ascii(), polygons_binary("<"), polygons_binary(">")],
                         ids=["ascii", "little-endian", "big-endian"])
def test_polygons_of_any_size_among_other_elements_and_properties(data):
    geometry = read(data, "polygons.ply")
    np.testing.assert_array_equal(geometry.vertices, SQUARE)
    assert triangles(geometry) == [(0, 1, 2), (0, 1, 2), (0, 2, 3), (0, 1, 2), (0, 2, 3), (0, 3, 1)]


def test_binary_triangles_take_the_structured_path_and_match():
    mesh = trimesh.creation.icosphere(subdivisions=3)
    geometry = read(mesh.export(file_type="ply", encoding="binary"), "sphere.ply")
    assert triangles(geometry)[:5] == [tuple(f) for f in mesh.faces[:5].tolist()]


@pytest.mark.parametrize("fmt", ["ascii", "binary_little_endian"])
def test_a_scan_without_faces_is_a_point_cloud(fmt):
    header = HEAD.format(fmt=fmt) + "element vertex 4\nproperty float x\nproperty float y\nproperty float z\n" \
        "property float psz\nend_header\n"
    body = ("".join(f"{x} {y} {z} 1\n" for x, y, z in SQUARE).encode() if fmt == "ascii"
            else b"".join(struct.pack("<ffff", *v, 1.0) for v in SQUARE))
    cloud = read(header.encode() + body, "scan.ply")
    assert isinstance(cloud, PointData)
    np.testing.assert_array_equal(cloud.points, SQUARE)


VERTICES = "element vertex {v}\nproperty float x\nproperty float y\nproperty float z\n"
FACES = "element face {f}\nproperty list uchar int vertex_indices\n"


@pytest.mark.parametrize(
    ("data", "sentence"),
    [
        (b"", "it is empty"),
        (b"PLY is what this is not\n", "it does not start with 'ply'"),
        (b"ply\nformat ascii 1.0\nelement vertex 1\n", "its header has no 'end_header' line"),
        (b"ply\nelement vertex 0\nend_header\n", r"its header names no format \(ascii, binary_little_endian or "
                                                  r"binary_big_endian\)"),
        (b"ply\nformat ascii 1.0\nelement vertex many\nend_header\n",
         "line 3 of its header is not a PLY format, element or property line"),
        ((HEAD + "element vertex 1\nproperty float x\nproperty float y\nend_header\n0 0\n").format(fmt="ascii").encode(),
         "its vertex element has no x, y and z properties"),
        ((HEAD + VERTICES + FACES + "end_header\n").format(fmt="ascii", v=3, f=1).encode()
         + b"0 0 0\n1 0 0\n0 1 0\n2 0 1\n", "face 1 has 2 corners; a face needs at least 3"),
        ((HEAD + VERTICES + FACES + "end_header\n").format(fmt="ascii", v=3, f=1).encode()
         + b"0 0 0\n1 0 0\n0 1 0\n3 0 1 5\n", r"triangle 1 refers to a vertex that does not exist \(the file has 3 "
                                               r"vertices\)"),
        ((HEAD + VERTICES + FACES + "end_header\n").format(fmt="ascii", v=3, f=1).encode()
         + b"0 0 0\n1 0 0\n0 1 0\n4 0 1 2\n", "a face line does not hold the numbers its properties declare"),
        ((HEAD + VERTICES + "end_header\n").format(fmt="binary_little_endian", v=10**12).encode() + b"\0" * 36,
         "the header declares 1000000000000 vertices, the data holds 3"),
        ((HEAD + VERTICES + FACES + "end_header\n").format(fmt="binary_little_endian", v=3, f=2).encode()
         + b"\0" * 36 + struct.pack("<B3i", 3, 0, 1, 2) + struct.pack("<B", 4),
         "the header declares 2 faces, the data holds 1"),
        ((HEAD + VERTICES + FACES + "end_header\n").format(fmt="binary_little_endian", v=3, f=2).encode()
         + b"\0" * 36, "the data ends inside the faces the header declares"),
    ],
)
def test_broken_files_get_a_sentence(data, sentence):
    with pytest.raises(ShapeError, match=f"^decode: broken.ply: {sentence}$"):
        read(data, "broken.ply")


def test_ascii_vertex_lists_are_stepped_over_and_may_be_left_out_at_the_end_of_a_line():
    header = HEAD.format(fmt="ascii") + ("element vertex 3\nproperty float x\nproperty float y\nproperty float z\n"
                                         "property list uchar int tags\nend_header\n")
    cloud = read((header + "0 0 0 2 7 8\n1 0 0\n0 1 0 0\n").encode(), "tagged.ply")
    np.testing.assert_array_equal(cloud.points, [[0, 0, 0], [1, 0, 0], [0, 1, 0]])
