"""The glTF reader: containers, accessors, scenes, primitive modes, Draco, glTF 1.0, and a sentence for each
broken asset."""

from __future__ import annotations

import io
import json
import random
import struct

import DracoPy
import numpy as np
import pytest
import trimesh

from sharding.decoders import gltf
from sharding.decoders.gltf import read
from sharding.records import MeshData, PointData, ShapeError
from tests.sharding.gltf_fixtures import SHORT, SQUARE, UBYTE, USHORT, Asset


def corners(geometry: MeshData) -> np.ndarray:
    return geometry.vertices[geometry.faces]


def square_asset(**node: object) -> Asset:
    asset = Asset()
    asset.node(mesh=asset.mesh(), **node)
    return asset


@pytest.mark.parametrize("file_type", ["glb", "gltf"])
def test_a_scene_trimesh_writes_reads_back_whole(file_type):
    """GLB, and .gltf with its buffer in a separate file, as trimesh writes them."""
    sphere = trimesh.creation.icosphere(1).apply_translation((3, 0, 0))
    scene = trimesh.Scene([trimesh.creation.box(), sphere])
    exported = scene.export(file_type=file_type)
    data = exported if isinstance(exported, bytes) else exported["model.gltf"]
    ours = read(data, f"scene.{file_type}", lambda uri: exported[uri])
    assert isinstance(ours, MeshData)
    assert len(ours.faces) == sum(len(m.faces) for m in scene.geometry.values())
    assert np.isclose(trimesh.Trimesh(ours.vertices, ours.faces, process=False).area, scene.to_mesh().area)
    np.testing.assert_allclose(ours.vertices.max(axis=0), scene.to_mesh().vertices.max(axis=0))


@pytest.mark.parametrize("file_type", ["glb", "gltf"])
def test_a_box_reads_as_trimesh_reads_it(file_type):
    """A box written by the fixture builder, as GLB and as .gltf with its buffer in a base64 data URI."""
    box = trimesh.creation.box(extents=(1.0, 2.0, 3.0))
    asset = Asset()
    asset.node(mesh=asset.mesh(box.vertices, box.faces.reshape(-1)))
    data = asset.glb() if file_type == "glb" else asset.gltf()
    theirs = trimesh.load_scene(io.BytesIO(data), file_type=file_type, process=False).to_mesh()
    ours = read(data, f"box.{file_type}")
    np.testing.assert_array_equal(ours.vertices, theirs.vertices)
    np.testing.assert_array_equal(ours.faces, theirs.faces)
    assert ours.vertices.dtype == np.float64 and ours.faces.dtype == np.int64


def test_an_external_buffer_is_read_through_resolve_and_its_absence_is_a_sentence():
    asset = square_asset()
    data = asset.gltf(uri="square%20data.bin")
    geometry = read(data, "square.gltf", {"square data.bin": bytes(asset.data)}.__getitem__)
    np.testing.assert_array_equal(corners(geometry)[1], SQUARE[[0, 2, 3]])
    missing = "^decode: square.gltf: the buffer 'square data.bin' it refers to is missing$"
    with pytest.raises(ShapeError, match=missing):
        read(data, "square.gltf", {}.__getitem__)
    with pytest.raises(ShapeError, match=missing):
        read(data, "square.gltf")  # no files beside it to read


def test_node_transforms_are_applied_as_the_specification_composes_them():
    half_turn_z = [0.0, 0.0, 1.0, 0.0]  # quaternion xyzw: 180 degrees about z
    asset = Asset()
    mesh = asset.mesh()
    child = asset.node(root=False, mesh=mesh, translation=[1.0, 2.0, 3.0], rotation=half_turn_z,
                       scale=[2.0, 2.0, 2.0])
    move_x = [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 10, 0, 0, 1]  # column-major: x += 10
    asset.node(children=[child], matrix=move_x)
    geometry = read(asset.glb(), "moved.glb")
    # (1, 1, 0) scaled to (2, 2, 0), turned to (-2, -2, 0), moved by (1, 2, 3) then by (10, 0, 0)
    np.testing.assert_allclose(geometry.vertices[2], [9.0, 0.0, 3.0], atol=1e-12)


def test_a_mesh_under_two_nodes_is_placed_twice_and_a_file_without_scenes_is_a_mesh_library():
    asset = Asset()
    mesh = asset.mesh()
    asset.node(mesh=mesh)
    asset.node(mesh=mesh, translation=[0.0, 0.0, 5.0])
    geometry = read(asset.glb(), "twice.glb")
    assert len(geometry.faces) == 4 and sorted(set(geometry.vertices[:, 2])) == [0.0, 5.0]
    del asset.doc["scenes"], asset.doc["scene"]
    assert len(read(asset.glb(), "library.glb").faces) == 2  # each mesh once, untransformed


@pytest.mark.parametrize(("mode", "indices", "triangles"), [
    (5, [0, 1, 3, 2], [(0, 1, 3), (1, 2, 3)]),  # TRIANGLE_STRIP: every other triangle reversed
    (6, [0, 1, 2, 3], [(1, 2, 0), (2, 3, 0)]),  # TRIANGLE_FAN: around the first vertex, which comes last
    (5, None, [(0, 1, 2), (1, 3, 2)]),  # non-indexed strip: the vertices in order
])
def test_strips_and_fans_become_triangles(mode, indices, triangles):
    asset = Asset()
    asset.node(mesh=asset.mesh(indices=indices, mode=mode))
    geometry = read(asset.glb(), "strip.glb")
    assert [tuple(map(int, f)) for f in geometry.faces] == triangles


def test_triangles_win_over_points_and_lines():
    asset = Asset()
    asset.node(mesh=asset.mesh(indices=None, mode=0))
    asset.node(mesh=asset.mesh(indices=[0, 1, 2, 3], mode=1))
    asset.node(mesh=asset.mesh(), translation=[0.0, 0.0, 1.0])
    geometry = read(asset.glb(), "mixed.glb")
    assert isinstance(geometry, MeshData) and len(geometry.vertices) == 4 and len(geometry.faces) == 2
    np.testing.assert_array_equal(geometry.vertices[:, 2], 1.0)


def test_points_are_a_cloud_and_lines_alone_are_a_sentence():
    asset = Asset()
    asset.node(mesh=asset.mesh(indices=None, mode=0))
    cloud = read(asset.glb(), "scan.glb")
    assert isinstance(cloud, PointData)
    np.testing.assert_array_equal(cloud.points, SQUARE)
    lines = Asset()
    lines.node(mesh=lines.mesh(indices=[0, 1, 1, 2], mode=1))
    with pytest.raises(ShapeError, match="^decode: wire.glb: it holds only LINES primitives: lines have no "
                                         "surface to sample$"):
        read(lines.glb(), "wire.glb")


def draco_asset(encoded: bytes, mode: int = 4, position_id: int = 0) -> bytes:
    asset = Asset()
    view = asset.view(encoded)
    asset.doc["accessors"].append({"componentType": 5126, "count": 0, "type": "VEC3"})
    asset.doc["meshes"].append({"primitives": [{"attributes": {"POSITION": 0}, "mode": mode, "extensions": {
        "KHR_draco_mesh_compression": {"bufferView": view, "attributes": {"POSITION": position_id}}}}]})
    asset.doc["extensionsRequired"] = ["KHR_draco_mesh_compression"]
    asset.node(mesh=0)
    return asset.glb()


def same_triangles(geometry: MeshData, mesh: trimesh.Trimesh, tolerance: float) -> bool:
    """Whether `geometry` holds `mesh`'s triangles, each with its winding, once Draco's vertex reordering is
    undone (every decoded vertex is matched to the original vertex nearest it)."""
    distances = np.linalg.norm(geometry.vertices[:, None] - mesh.vertices[None], axis=2)
    if distances.min(axis=1).max() > tolerance:
        return False
    faces = distances.argmin(axis=1)[geometry.faces]

    def canonical(triangles: np.ndarray) -> set[tuple[int, ...]]:  # each triangle from its smallest corner on
        return {tuple(np.roll(t, -int(np.argmin(t)))) for t in triangles.tolist()}
    return canonical(faces) == canonical(mesh.faces)


def test_draco_meshes_and_clouds_decode():
    mesh = trimesh.creation.icosphere(subdivisions=2)
    step = 2 / 2**14  # of 14-bit quantisation over [-1, 1]
    vertices, faces = mesh.vertices.astype(np.float32), mesh.faces.astype(np.uint32)
    geometry = read(draco_asset(DracoPy.encode(vertices, faces, quantization_bits=14)), "draco.glb")
    assert isinstance(geometry, MeshData) and len(geometry.faces) == len(mesh.faces)
    assert same_triangles(geometry, mesh, tolerance=2 * step)
    cloud = read(draco_asset(DracoPy.encode(mesh.vertices.astype(np.float32)), mode=0), "draco-cloud.glb")
    assert isinstance(cloud, PointData) and len(cloud.points) == len(mesh.vertices)
    np.testing.assert_allclose(np.sort(cloud.points, axis=0), np.sort(mesh.vertices, axis=0), atol=2 * step)


def test_draco_positions_are_the_attribute_the_extension_names():
    """DracoPy writes normals before positions: POSITION is Draco attribute 1; attribute 7 does not exist."""
    mesh = trimesh.creation.icosphere(subdivisions=1)
    encoded = DracoPy.encode(mesh.vertices.astype(np.float32), mesh.faces.astype(np.uint32),
                             normals=mesh.vertex_normals.copy())
    assert same_triangles(read(draco_asset(encoded, position_id=1), "draco.glb"), mesh, tolerance=1e-3)
    with pytest.raises(ShapeError, match="^decode: draco.glb: primitive 0 of mesh 0 has no 3D Draco POSITION "
                                         "attribute with the id its extension names$"):
        read(draco_asset(encoded, position_id=7), "draco.glb")


def test_interleaved_normalized_and_sparse_accessors():
    asset = Asset()
    interleaved = np.concatenate([SQUARE, np.ones_like(SQUARE)], axis=1)  # position then normal, stride 24
    view = asset.view(interleaved.tobytes(), stride=24)
    asset.doc["accessors"].append({"bufferView": view, "componentType": 5126, "count": 4, "type": "VEC3"})
    quantized = asset.accessor((SQUARE * 32767).astype(np.int16), "VEC3", SHORT, normalized=True)
    moved = asset.accessor(np.zeros((4, 3), np.float32), "VEC3", sparse=asset.sparse([2], [[7, 7, 7]]))
    indices = asset.accessor(np.array([0, 1, 2], np.uint16), "SCALAR", USHORT)
    for position in (0, quantized, moved):
        primitive = {"attributes": {"POSITION": position}, "indices": indices}
        asset.doc["meshes"].append({"primitives": [primitive]})
        asset.node(mesh=len(asset.doc["meshes"]) - 1)
    geometry = read(asset.glb(), "accessors.glb")
    np.testing.assert_allclose(geometry.vertices[:8], np.concatenate([SQUARE, SQUARE]), atol=1e-4)
    np.testing.assert_array_equal(geometry.vertices[8:], [[0, 0, 0], [0, 0, 0], [7, 7, 7], [0, 0, 0]])


def test_an_accessor_without_a_buffer_view_is_zeros_then_its_sparse_values():
    asset = square_asset()
    del asset.doc["accessors"][0]["bufferView"]
    asset.doc["accessors"][0]["sparse"] = asset.sparse([1, 3], [[1, 2, 3], [4, 5, 6]], UBYTE)
    geometry = read(asset.glb(), "sparse.glb")
    np.testing.assert_array_equal(geometry.vertices, [[0, 0, 0], [1, 2, 3], [0, 0, 0], [4, 5, 6]])


def test_a_gltf_1_document_is_read():
    square = square_asset().gltf()
    v2 = json.loads(square)
    v1 = {"asset": {"version": "1.0"}, "buffers": {"b": {**v2["buffers"][0], "type": "arraybuffer"}},
          "bufferViews": {f"v{i}": {**v, "buffer": "b"} for i, v in enumerate(v2["bufferViews"])},
          "accessors": {f"a{i}": {**a, "bufferView": f"v{a['bufferView']}", "byteStride": 0}
                        for i, a in enumerate(v2["accessors"])},
          "meshes": {"m": {"primitives": [{"attributes": {"POSITION": "a0"}, "indices": "a1", "mode": 4}]}},
          "nodes": {"root": {"children": ["box"], "matrix": [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1]},
                    "box": {"meshes": ["m", "m"], "translation": [0, 0, 1]}},
          "scenes": {"main": {"nodes": ["root"]}}, "scene": "main"}
    geometry = read(json.dumps(v1).encode(), "old.gltf")
    assert len(geometry.faces) == 4  # one node with the mesh twice
    np.testing.assert_array_equal(sorted(set(geometry.vertices[:, 2])), [1.0])


def broken_assets() -> list[tuple[bytes, str]]:
    cycle = Asset()
    mesh = cycle.mesh()
    cycle.node(mesh=mesh, children=[1])
    cycle.node(root=False, children=[0])
    empty_scene = square_asset()
    empty_scene.doc["scenes"][0]["nodes"] = []
    meshopt = square_asset()
    meshopt.doc["extensionsRequired"] = ["KHR_materials_unlit", "EXT_meshopt_compression"]
    odd_extension = square_asset()
    odd_extension.doc["extensionsRequired"] = ["what is this?"]
    past_end = square_asset()
    past_end.doc["accessors"][0]["count"] = 10**9
    out_of_range = Asset()
    out_of_range.node(mesh=out_of_range.mesh(indices=[0, 1, 9]))
    too_short = Asset()
    too_short.node(mesh=too_short.mesh(indices=[0, 1], mode=5))
    ragged = Asset()
    ragged.node(mesh=ragged.mesh(indices=[0, 1, 2, 3]))
    version_3 = square_asset()
    version_3.doc["asset"]["version"] = "3.0"
    no_version = square_asset()
    del no_version.doc["asset"]["version"]
    zeros = square_asset()
    zeros.doc["accessors"][0] = {"componentType": 5126, "count": 10**12, "type": "VEC3"}
    float_indices = Asset()
    float_indices.node(mesh=float_indices.mesh())
    float_indices.doc["accessors"][1].update(componentType=5126, count=3)  # the 12 bytes of six uint16
    undefined_mode = Asset()
    undefined_mode.node(mesh=undefined_mode.mesh(mode=9))
    bad_matrix = square_asset(matrix=[1, 0, 0, 1])
    bad_rotation = square_asset(rotation=[0, 0, "half", 1])
    missing_scene = square_asset()
    missing_scene.doc["scene"] = 3
    missing_node = square_asset()
    missing_node.doc["scenes"][0]["nodes"] = [0, 5]
    missing_mesh = square_asset()
    missing_mesh.doc["nodes"][0]["mesh"] = 2
    primitives = square_asset()
    primitives.doc["meshes"][0]["primitives"] = {"not": "a list"}
    no_position = Asset()
    no_position.node(mesh=no_position.mesh())
    no_position.doc["meshes"][0]["primitives"][0]["attributes"] = {"NORMAL": 0}
    missing_accessor = square_asset()
    missing_accessor.doc["meshes"][0]["primitives"][0]["indices"] = 42
    view_past_end = square_asset()
    view_past_end.doc["bufferViews"][1]["byteLength"] = 1000
    garbled_draco = draco_asset(b"DRACO" + b"\x07" * 40)
    glb = square_asset().glb()
    bad_json = glb[:20] + b"[not" + glb[24:]
    return [
        (b"", "it is empty"),
        (b"\x00\x01 not json", "it is neither a GLB container nor glTF JSON"),
        (b'{"asset": {"version": "2.0"}, "meshes": [', "it is neither a GLB container nor glTF JSON"),
        (b"[" * 100_000, "it is neither a GLB container nor glTF JSON"),  # nested past the recursion limit
        (b"[1, 2]", "its glTF JSON is not an object"),
        (bad_json, "its GLB JSON content is not valid JSON"),
        (glb[:16], "it is shorter than a GLB header"),
        (glb[:-40], f"its GLB header declares {len(glb)} bytes, the file holds {len(glb) - 40}"),
        (struct.pack("<4sII", b"glTF", 7, 20) + b"\0" * 8,
         "it is a version 7 GLB container; only versions 1 and 2 exist"),
        (cycle.glb(), r"node 0 is its own ancestor \(the node graph has a cycle\)"),
        (empty_scene.glb(), "its default scene holds no meshes"),
        (meshopt.glb(), "it requires the extension EXT_meshopt_compression, which is not supported"),
        (odd_extension.glb(), "it requires the extension with a malformed name, which is not supported"),
        (past_end.glb(), "accessor 0 reads past the end of buffer view 0"),
        (out_of_range.glb(), "primitive 0 of mesh 0 refers to vertex 9, past its 4 vertices"),
        (ragged.glb(), "primitive 0 of mesh 0 has 4 triangle indices, not a multiple of 3"),
        (too_short.glb(), "its meshes hold no triangles and no points"),
        (version_3.glb(), r"glTF version 3.0 is not supported \(only 1.x and 2.x\)"),
        (no_version.glb(), r"glTF version \(missing\) is not supported \(only 1.x and 2.x\)"),
        (json.dumps({"asset": {"version": "2.0"}, "scenes": "none"}).encode(),
         "its scenes or nodes are not a list"),
        (zeros.glb(), (r"accessor 0 declares 1000000000000 elements without a buffer view to hold them "
                       r"\(at most 16777216 are made of zeros\)")),
        (float_indices.glb(), "primitive 0 of mesh 0 has indices that are not integer scalars"),
        (undefined_mode.glb(), "primitive 0 of mesh 0 has a mode that glTF 2.0 does not define"),
        (bad_matrix.glb(), "node 0 has a matrix that is not 16 numbers"),
        (bad_rotation.glb(), "node 0 has a rotation that is not 4 numbers"),
        (missing_scene.glb(), "its default scene is not the index of one of its scenes"),
        (missing_node.glb(), "scene 0 refers to a node that does not exist"),
        (missing_mesh.glb(), "node 0 refers to a mesh that does not exist"),
        (primitives.glb(), "mesh 0 has no list of primitives"),
        (no_position.glb(), "primitive 0 of mesh 0 has no POSITION attribute"),
        (missing_accessor.glb(), "it refers to accessor 42, which does not exist"),
        (view_past_end.glb(), "buffer view 1 reaches past the end of its buffer"),
        (garbled_draco, "primitive 0 of mesh 0 holds Draco data that does not decode"),
    ]


@pytest.mark.parametrize(("data", "sentence"), broken_assets())
def test_broken_assets_get_a_sentence(data, sentence):
    with pytest.raises(ShapeError, match=f"^decode: broken.glb: {sentence}$"):
        read(data, "broken.glb")


def test_the_same_bytes_give_the_same_arrays():
    data = trimesh.creation.icosphere(3).export(file_type="glb")
    a, b = read(data, "a.glb"), read(data, "a.glb")
    assert a.vertices.tobytes() == b.vertices.tobytes() and a.faces.tobytes() == b.faces.tobytes()


def test_a_node_graph_that_expands_past_the_limit_is_a_sentence(monkeypatch):
    """Forty nodes, each with the next as both its children, place the mesh at the bottom 2**40 times."""
    monkeypatch.setattr(gltf, "MAX_VISITS", 1000)
    asset = Asset()
    mesh = asset.mesh()
    for level in range(40):
        asset.node(root=level == 0, children=[level + 1, level + 1])
    asset.node(root=False, mesh=mesh)
    with pytest.raises(ShapeError, match="^decode: dag.glb: its scene expands to more than 1000 node "):
        read(asset.glb(), "dag.glb")


def test_damaged_files_fail_with_a_sentence_and_nothing_else():
    """Bytes of a GLB (accessors, sparse storage, nodes and a Draco primitive) overwritten at random."""
    asset = square_asset(translation=[1.0, 2.0, 3.0])
    asset.doc["accessors"][0]["sparse"] = asset.sparse([2], [[7, 7, 7]])
    sphere = trimesh.creation.icosphere(1)
    draco = asset.view(DracoPy.encode(sphere.vertices.astype(np.float32), sphere.faces.astype(np.uint32)))
    asset.doc["meshes"].append({"primitives": [{"attributes": {"POSITION": 0}, "extensions": {
        "KHR_draco_mesh_compression": {"bufferView": draco, "attributes": {"POSITION": 0}}}}]})
    asset.node(mesh=1)
    glb = asset.glb()
    rng = random.Random(0)
    for _ in range(300):
        damaged = bytearray(glb)
        for _ in range(rng.randint(1, 4)):
            damaged[rng.randrange(len(damaged))] = rng.randrange(256)
        try:
            read(bytes(damaged), "damaged.glb")
        except ShapeError as err:
            assert err.stage == "decode" and err.reason.startswith("damaged.glb: ")


def test_a_missing_buffer_is_named_only_when_its_uri_is_a_plain_file_name():
    asset = square_asset()
    data = asset.gltf(uri="odd%0Aname%22.bin")  # a newline and a quote: file content, not a name to repeat
    with pytest.raises(ShapeError, match="^decode: odd.gltf: the buffer file of buffer 0 it refers to is missing$"):
        read(data, "odd.gltf", {}.__getitem__)
