"""The glTF reader: containers, accessors, scenes, primitive modes, Draco, glTF 1.0, and a sentence for each
broken asset."""

from __future__ import annotations

import json
import struct

import DracoPy
import numpy as np
import pytest
import trimesh

from sharding.decoders.gltf import read
from sharding.records import MeshData, PointData, ShapeError
from tests.sharding.gltf_fixtures import SHORT, SQUARE, USHORT, Asset


def corners(geometry: MeshData) -> np.ndarray:
    return geometry.vertices[geometry.faces]


def square_asset(**node: object) -> Asset:
    asset = Asset()
    asset.node(mesh=asset.mesh(), **node)
    return asset


@pytest.mark.parametrize("file_type", ["glb", "gltf"])
def test_a_scene_trimesh_writes_reads_back_whole(file_type):
    """GLB, and .gltf with its buffer in a separate file, as trimesh writes them."""
    scene = trimesh.Scene([trimesh.creation.box(), trimesh.creation.icosphere(1).apply_translation((3, 0, 0))])
    exported = scene.export(file_type=file_type)
    data = exported if isinstance(exported, bytes) else exported["model.gltf"]
    ours = read(data, f"scene.{file_type}", lambda uri: exported[uri])
    assert isinstance(ours, MeshData) and len(ours.faces) == sum(len(m.faces) for m in scene.geometry.values())
    assert np.isclose(trimesh.Trimesh(ours.vertices, ours.faces, process=False).area, scene.to_mesh().area)
    np.testing.assert_allclose(ours.vertices.max(axis=0), scene.to_mesh().vertices.max(axis=0))


def test_an_external_buffer_is_read_through_resolve_and_its_absence_is_a_sentence():
    asset = square_asset()
    data = asset.gltf(uri="square%20data.bin")
    geometry = read(data, "square.gltf", {"square data.bin": bytes(asset.data)}.__getitem__)
    np.testing.assert_array_equal(corners(geometry)[1], SQUARE[[0, 2, 3]])
    with pytest.raises(ShapeError, match="^decode: square.gltf: the buffer 'square data.bin' it refers to is missing$"):
        read(data, "square.gltf", {}.__getitem__)


def test_node_transforms_are_applied_as_the_specification_composes_them():
    half_turn_z = [0.0, 0.0, 1.0, 0.0]  # quaternion xyzw: 180 degrees about z
    asset = Asset()
    mesh = asset.mesh()
    child = asset.node(root=False, mesh=mesh, translation=[1.0, 2.0, 3.0], rotation=half_turn_z, scale=[2.0, 2.0, 2.0])
    asset.node(children=[child], matrix=[1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 10, 0, 0, 1])  # column-major: x += 10
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
    (5, [0, 1, 3, 2], [(0, 1, 3), (3, 1, 2)]),  # TRIANGLE_STRIP: every other triangle reversed
    (6, [0, 1, 2, 3], [(0, 1, 2), (0, 2, 3)]),  # TRIANGLE_FAN
    (5, None, [(0, 1, 2), (2, 1, 3)]),  # non-indexed strip: the vertices in order
])
def test_strips_and_fans_become_triangles(mode, indices, triangles):
    asset = Asset()
    asset.node(mesh=asset.mesh(indices=indices, mode=mode))
    geometry = read(asset.glb(), "strip.glb")
    assert [tuple(map(int, f)) for f in geometry.faces] == triangles


def test_points_are_a_cloud_and_lines_alone_are_a_sentence():
    asset = Asset()
    asset.node(mesh=asset.mesh(indices=None, mode=0))
    cloud = read(asset.glb(), "scan.glb")
    assert isinstance(cloud, PointData)
    np.testing.assert_array_equal(cloud.points, SQUARE)
    lines = Asset()
    lines.node(mesh=lines.mesh(indices=[0, 1, 1, 2], mode=1))
    with pytest.raises(ShapeError, match="it holds only LINES primitives: lines have no surface to sample"):
        read(lines.glb(), "wire.glb")


def draco_asset(encoded: bytes, mode: int = 4) -> bytes:
    asset = Asset()
    view = asset.view(encoded)
    asset.doc["accessors"].append({"componentType": 5126, "count": 0, "type": "VEC3"})
    asset.doc["meshes"].append({"primitives": [{"attributes": {"POSITION": 0}, "mode": mode, "extensions": {
        "KHR_draco_mesh_compression": {"bufferView": view, "attributes": {"POSITION": 0}}}}]})
    asset.doc["extensionsRequired"] = ["KHR_draco_mesh_compression"]
    asset.node(mesh=0)
    return asset.glb()


def test_draco_meshes_and_clouds_decode():
    mesh = trimesh.creation.icosphere(subdivisions=2)
    encoded = DracoPy.encode(mesh.vertices.astype(np.float32), mesh.faces.astype(np.uint32), quantization_bits=14)
    geometry = read(draco_asset(encoded), "draco.glb")
    assert isinstance(geometry, MeshData) and len(geometry.faces) == len(mesh.faces)
    assert abs(trimesh.Trimesh(geometry.vertices, geometry.faces, process=False).area - mesh.area) < 1e-3 * mesh.area
    cloud = read(draco_asset(DracoPy.encode(mesh.vertices.astype(np.float32)), mode=0), "draco-cloud.glb")
    assert isinstance(cloud, PointData) and len(cloud.points) == len(mesh.vertices)


def test_interleaved_normalized_and_sparse_accessors():
    asset = Asset()
    interleaved = np.concatenate([SQUARE, np.ones_like(SQUARE)], axis=1)  # position then normal, stride 24
    view = asset.view(interleaved.tobytes(), stride=24)
    asset.doc["accessors"].append({"bufferView": view, "componentType": 5126, "count": 4, "type": "VEC3"})
    quantized = asset.accessor((SQUARE * 32767).astype(np.int16), "VEC3", SHORT, normalized=True)
    moved = asset.accessor(np.zeros((4, 3), np.float32), "VEC3", sparse={
        "count": 1, "indices": {"bufferView": asset.view(np.array([2], np.uint16).tobytes()), "componentType": USHORT},
        "values": {"bufferView": asset.view(np.array([[7, 7, 7]], np.float32).tobytes())}})
    indices = asset.accessor(np.array([0, 1, 2], np.uint16), "SCALAR", USHORT)
    for position in (0, quantized, moved):
        asset.doc["meshes"].append({"primitives": [{"attributes": {"POSITION": position}, "indices": indices}]})
        asset.node(mesh=len(asset.doc["meshes"]) - 1)
    geometry = read(asset.glb(), "accessors.glb")
    np.testing.assert_allclose(geometry.vertices[:8], np.concatenate([SQUARE, SQUARE]), atol=1e-4)
    np.testing.assert_array_equal(geometry.vertices[8:], [[0, 0, 0], [0, 0, 0], [7, 7, 7], [0, 0, 0]])


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
    past_end = square_asset()
    past_end.doc["accessors"][0]["count"] = 10**9
    out_of_range = Asset()
    out_of_range.node(mesh=out_of_range.mesh(indices=[0, 1, 9]))
    ragged = Asset()
    ragged.node(mesh=ragged.mesh(indices=[0, 1, 2, 3]))
    version_3 = square_asset()
    version_3.doc["asset"]["version"] = "3.0"
    glb = square_asset().glb()
    return [
        (b"", "it is empty"),
        (b"\x00\x01 not json", "it is neither a GLB container nor glTF JSON"),
        (glb[:-40], f"its GLB header declares {len(glb)} bytes, the file holds {len(glb) - 40}"),
        (struct.pack("<4sII", b"glTF", 7, 20) + b"\0" * 8, "it is a version 7 GLB container; only versions 1 and 2 exist"),
        (cycle.glb(), r"node 0 is its own ancestor \(the node graph has a cycle\)"),
        (empty_scene.glb(), "its default scene holds no meshes"),
        (meshopt.glb(), "it requires the extension EXT_meshopt_compression, which is not supported"),
        (past_end.glb(), "accessor 0 reads past the end of buffer view 0"),
        (out_of_range.glb(), "primitive 0 of mesh 0 refers to vertex 9, past its 4 vertices"),
        (ragged.glb(), "primitive 0 of mesh 0 has 4 triangle indices, not a multiple of 3"),
        (version_3.glb(), r"glTF version 3.0 is not supported \(only 1.x and 2.x\)"),
        (json.dumps({"asset": {"version": "2.0"}, "scenes": "none"}).encode(),
         r"its glTF JSON is malformed \(a field is missing or has the wrong type\)"),
    ]


@pytest.mark.parametrize(("data", "sentence"), broken_assets())
def test_broken_assets_get_a_sentence(data, sentence):
    with pytest.raises(ShapeError, match=f"^decode: broken.glb: {sentence}$"):
        read(data, "broken.glb")


def test_the_same_bytes_give_the_same_arrays():
    data = trimesh.creation.icosphere(3).export(file_type="glb")
    a, b = read(data, "a.glb"), read(data, "a.glb")
    assert a.vertices.tobytes() == b.vertices.tobytes() and a.faces.tobytes() == b.faces.tobytes()
