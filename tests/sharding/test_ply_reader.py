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
from tests.sharding.mutations import assert_well_formed, mutations

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


def box_big_endian() -> bytes:
    box = trimesh.creation.box()
    header = HEAD.format(fmt="binary_big_endian").replace("\n", "\r\n") + (
        f"element vertex {len(box.vertices)}\r\nproperty float x\r\nproperty float y\r\nproperty float z\r\n"
        f"element face {len(box.faces)}\r\nproperty list uchar int vertex_indices\r\nend_header\r\n")
    body = box.vertices.astype(">f4").tobytes() + b"".join(struct.pack(">B3i", 3, *f) for f in box.faces.tolist())
    return header.encode() + body


@pytest.mark.parametrize("data", [trimesh.creation.box().export(file_type="ply", encoding="ascii"),
                                  trimesh.creation.box().export(file_type="ply", encoding="binary"), box_big_endian()],
                         ids=["ascii", "little-endian", "big-endian-crlf-header"])
def test_a_box_has_trimesh_vertices_and_faces(data):
    ours = read(data, "box.ply")
    theirs = trimesh.load(io.BytesIO(data), file_type="ply", process=False)
    assert isinstance(ours, MeshData) and ours.vertices.dtype == np.float64 and ours.faces.dtype == np.int64
    np.testing.assert_array_equal(ours.vertices, theirs.vertices)
    np.testing.assert_array_equal(ours.faces, theirs.faces)


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
        "element edge 2\nproperty list short uint16 pair\nproperty float weight\n"
        "element face 3\nproperty list uchar int vertex_indices\nproperty short flags\nend_header\n")
    body = b"".join(struct.pack(order + "dddB", *v, 200) for v in SQUARE)
    body += struct.pack(order + "h2Hf", 2, 0, 1, 0.5) + struct.pack(order + "h3Hf", 3, 1, 2, 3, 0.5)
    for face in ((0, 1, 2), (0, 1, 2, 3), (0, 1, 2, 3, 1)):
        body += struct.pack(order + "B" + "i" * len(face) + "h", len(face), *face, 7)
    return header.encode() + body


@pytest.mark.parametrize("data", [polygons_ascii(), polygons_binary("<"), polygons_binary(">")],
                         ids=["ascii", "little-endian", "big-endian"])
def test_polygons_of_any_size_among_other_elements_and_properties(data):
    geometry = read(data, "polygons.ply")
    np.testing.assert_array_equal(geometry.vertices, SQUARE)
    assert triangles(geometry) == [(0, 1, 2), (0, 1, 2), (0, 2, 3), (0, 1, 2), (0, 2, 3), (0, 3, 1)]


@pytest.mark.parametrize("order", ["<", ">"])
def test_binary_quads_all_of_one_size(order):
    header = HEAD.format(fmt={"<": "binary_little_endian", ">": "binary_big_endian"}[order]) + (
        "element vertex 6\nproperty int16 x\nproperty uint8 y\nproperty float32 z\n"
        "element face 2\nproperty list uint8 uint32 vertex_index\nend_header\n")
    body = b"".join(struct.pack(order + "hBf", x, y, 0.25) for x, y in [(0, 0), (1, 0), (1, 1), (0, 1), (2, 0), (2, 1)])
    body += struct.pack(order + "B4I", 4, 0, 1, 2, 3) + struct.pack(order + "B4I", 4, 1, 4, 5, 2)
    geometry = read(header.encode() + body, "quads.ply")
    np.testing.assert_array_equal(geometry.vertices[:, 2], [0.25] * 6)
    np.testing.assert_array_equal(geometry.vertices[4], [2, 0, 0.25])
    assert triangles(geometry) == [(0, 1, 2), (0, 2, 3), (1, 4, 5), (1, 5, 2)]


def test_many_mixed_polygons_are_walked_row_by_row():
    """Triangles, quads and pentagons in a varying order, with a property after the list: no two
    neighbouring rows need have one layout."""
    rng = np.random.default_rng(7)
    polygons = [rng.choice(50, size=k, replace=False).tolist() for k in rng.integers(3, 6, size=400)]
    header = HEAD.format(fmt="binary_little_endian") + VERTICES.format(v=50) + (
        "element face 400\nproperty list uchar int vertex_indices\nproperty uchar flags\nend_header\n")
    body = rng.normal(size=(50, 3)).astype("<f4").tobytes()
    body += b"".join(struct.pack(f"<B{len(p)}iB", len(p), *p, 9) for p in polygons)
    geometry = read(header.encode() + body, "mixed.ply")
    expected = [(p[0], p[j], p[j + 1]) for p in polygons for j in range(1, len(p) - 1)]
    assert triangles(geometry) == expected


def test_binary_vertices_with_a_list_property():
    header = HEAD.format(fmt="binary_little_endian") + (
        "element vertex 3\nproperty list uchar float tags\nproperty float x\nproperty float y\nproperty float z\n"
        "end_header\n")
    body = b"".join(struct.pack(f"<B{n}f3f", n, *([7.0] * n), *v) for n, v in zip((2, 0, 1), SQUARE))
    cloud = read(header.encode() + body, "tagged.ply")
    assert isinstance(cloud, PointData)
    np.testing.assert_array_equal(cloud.points, SQUARE[:3])


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
        (b"ply\nelement vertex 0\nend_header\n", (r"its header names no format \(ascii, binary_little_endian or "
                                                  r"binary_big_endian\)")),
        (b"ply\nformat ascii 1.0\nelement vertex many\nend_header\n",
         "line 3 of its header is not a PLY format, element or property line"),
        ((HEAD + "element vertex 1\nproperty float x\nproperty float y\nend_header\n0 0\n").format(fmt="ascii").encode(),
         "its vertex element has no x, y and z properties"),
        ((HEAD + VERTICES + FACES + "end_header\n").format(fmt="ascii", v=3, f=1).encode()
         + b"0 0 0\n1 0 0\n0 1 0\n2 0 1\n", "face 1 has 2 corners; a face needs at least 3"),
        ((HEAD + VERTICES + FACES + "end_header\n").format(fmt="ascii", v=3, f=1).encode()
         + b"0 0 0\n1 0 0\n0 1 0\n3 0 1 5\n", (r"face 1 refers to a vertex that does not exist \(the file has 3 "
                                               r"vertices\)")),
        ((HEAD + VERTICES + FACES.replace("1\n", "2\n") + "end_header\n").format(fmt="ascii", v=4, f=2).encode()
         + b"0 0 0\n1 0 0\n0 1 0\n1 1 0\n4 0 1 2 3\n4 0 1 2 -1\n",
         r"face 2 refers to a vertex that does not exist \(the file has 4 vertices\)"),
        ((HEAD + VERTICES + FACES + "end_header\n").format(fmt="ascii", v=3, f=1).encode()
         + b"0 0 0\n1 0 0\n0 1 0\n3 0 1.5 2\n", "face 1 has a corner that is not a whole vertex number"),
        ((HEAD + VERTICES + FACES + "end_header\n").format(fmt="ascii", v=3, f=1).encode()
         + b"0 0 0\n1 0 0\n0 1 0\n4e90 0 1 2\n", "a face line does not hold the numbers its properties declare"),
        ((HEAD + VERTICES + FACES + "end_header\n").format(fmt="ascii", v=3, f=1).encode()
         + b"0 0 0\n1 0 0\n0 one 0\n3 0 1 2\n", "a vertex line holds something that is not a number"),
        ((HEAD + VERTICES + FACES + "end_header\n").format(fmt="ascii", v=3, f=1).encode()
         + b"0 0 0\n1 0 0\n0 1\n3 0 1 2\n", "a vertex line does not hold the numbers its properties declare"),
        ((HEAD + VERTICES + FACES + "end_header\n").format(fmt="ascii", v=3, f=1).encode()
         + b"0 0 0\n1 0 0\n0 1 0\n3 0 one 2\n", "a face line holds something that is not a number"),
        (b"ply\nformat ascii 1.0\ncomment \xe9t\xe9\nend_header\n", "its header is not ASCII text"),
        (b"ply\nformat ascii 1.0\nelement face 0\nend_header\n", "it holds no vertices"),
        ((HEAD + VERTICES + "element face 1\nproperty list uchar int corners\nend_header\n").format(
            fmt="ascii", v=3).encode() + b"0 0 0\n1 0 0\n0 1 0\n3 0 1 2\n", "its face element has no vertex_indices list"),
        ((HEAD + VERTICES + "element secret 2\nproperty list int int payload\nend_header\n").format(
            fmt="binary_little_endian", v=3).encode() + b"\0" * 36 + struct.pack("<ii", 1, 5),
         "the header declares 2 rows of element 2, the data holds 1"),
        ((HEAD + VERTICES + "element face 1\nproperty list char int vertex_indices\nend_header\n").format(
            fmt="binary_little_endian", v=3).encode() + b"\0" * 36 + struct.pack("<b", -3) + b"\0" * 12,
         "face 1 has a list of negative length"),
        ((HEAD + VERTICES + FACES + "end_header\n").format(fmt="binary_little_endian", v=3, f=10**12).encode()
         + b"\0" * 36 + struct.pack("<B3i", 3, 0, 1, 2), ("the header declares 1000000000000 faces, the data holds at "
                                                          "most 13")),
        ((HEAD + VERTICES + FACES + "end_header\n").format(fmt="binary_little_endian", v=3, f=3).encode()
         + b"\0" * 36 + struct.pack("<B3i", 3, 0, 1, 2) + struct.pack("<B4i", 4, 0, 1, 2, 0) + struct.pack("<B", 3),
         "the header declares 3 faces, the data holds 2"),
        ((HEAD + VERTICES + FACES + "end_header\n").format(fmt="binary_little_endian", v=3, f=1).encode()
         + b"\0" * 36 + struct.pack("<B3i", 3, 0, 1, 3), (r"face 1 refers to a vertex that does not exist \(the file "
                                                          r"has 3 vertices\)")),
        ((HEAD + VERTICES + FACES + "end_header\n").format(fmt="ascii", v=3, f=1).encode()
         + b"0 0 0\n1 0 0\n0 1 0\n4 0 1 2\n", "a face line does not hold the numbers its properties declare"),
        ((HEAD + VERTICES + "end_header\n").format(fmt="binary_little_endian", v=10**12).encode() + b"\0" * 36,
         "the header declares 1000000000000 vertices, the data holds 3"),
        ((HEAD + VERTICES + FACES + "end_header\n").format(fmt="binary_little_endian", v=3, f=2).encode()
         + b"\0" * 36 + struct.pack("<B3i", 3, 0, 1, 2) + struct.pack("<B", 4),
         "the header declares 2 faces, the data holds 1"),
        ((HEAD + VERTICES + FACES + "end_header\n").format(fmt="binary_little_endian", v=3, f=2).encode()
         + b"\0" * 36, "the header declares 2 faces, the data holds 0"),
    ],
)
def test_broken_files_get_a_sentence(data, sentence):
    with pytest.raises(ShapeError, match=f"^decode: broken.ply: {sentence}$") as caught:
        read(data, "broken.ply")
    assert caught.value.stage == "decode"


def test_ascii_vertex_lists_are_stepped_over_and_may_be_left_out_at_the_end_of_a_line():
    header = HEAD.format(fmt="ascii") + ("element vertex 3\nproperty float x\nproperty float y\nproperty float z\n"
                                         "property list uchar int tags\nend_header\n")
    cloud = read((header + "0 0 0 2 7 8\n1 0 0\n0 1 0 0\n").encode(), "tagged.ply")
    np.testing.assert_array_equal(cloud.points, [[0, 0, 0], [1, 0, 0], [0, 1, 0]])


def test_mutated_files_are_read_or_refused_with_a_foreseen_sentence():
    seeds = [polygons_ascii(), polygons_binary("<"), polygons_binary(">"), box_big_endian(),
             trimesh.creation.box().export(file_type="ply", encoding="ascii")]
    refused = 0
    for data in mutations(seeds, 3000):
        try:
            assert_well_formed(read(data, "mutated.ply"))
        except ShapeError as err:
            assert err.stage == "decode" and "does not parse as PLY" not in err.reason, err.reason
            refused += 1
    assert 2000 < refused < 3000  # most mutations break the file, some leave it readable
