"""The STL reader: binary and ASCII facets as triangles, and a sentence for each broken file."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from sharding.decoders.stl import read
from sharding.records import MeshData, ShapeError


def corners(geometry: MeshData) -> np.ndarray:
    return geometry.vertices[geometry.faces]


@pytest.mark.parametrize("encoding", ["binary", "ascii"])
def test_facets_read_as_trimesh_writes_them(encoding):
    mesh = trimesh.creation.icosphere(subdivisions=2)
    data = mesh.export(file_type="stl") if encoding == "binary" else trimesh.exchange.stl.export_stl_ascii(mesh)
    geometry = read(data if isinstance(data, bytes) else data.encode(), "sphere.stl")
    assert isinstance(geometry, MeshData) and geometry.faces.shape == (len(mesh.faces), 3)
    np.testing.assert_allclose(corners(geometry), mesh.vertices[mesh.faces], atol=1e-6)


def test_a_binary_header_that_starts_with_solid_is_still_binary():
    data = bytearray(trimesh.creation.box().export(file_type="stl"))
    data[:80] = b"solid exported by a CAD tool".ljust(80)
    assert read(bytes(data), "box.stl").faces.shape == (12, 3)


def test_ascii_with_several_solids_and_indentation():
    facet = "  facet normal 0 0 1\n    outer loop\n      vertex 0 0 {z}\n      vertex 1 0 {z}\n" \
            "      vertex 0 1 {z}\n    endloop\n  endfacet\n"
    text = "solid a\n" + facet.format(z=0) + "endsolid a\nsolid b\n" + facet.format(z=2) + "endsolid b\n"
    geometry = read(text.encode(), "two.stl")
    np.testing.assert_array_equal(corners(geometry)[:, 0, 2], [0, 2])


@pytest.mark.parametrize(
    ("data", "sentence"),
    [
        (b"", "it is empty"),
        (b"\x00" * 80 + (1000).to_bytes(4, "little") + b"\x00" * 100, "the header declares 1000 facets, the data holds 2"),
        (b"\x01" * 40, "it is 40 bytes, shorter than a binary STL header"),
        (b"solid x\nendsolid x\n", r"it holds no facets \('vertex' lines\)"),
        (b"solid x\nfacet normal 0 0 1\nouter loop\nvertex 0 0 0\nvertex 1 0 0\nendloop\nendfacet\n",
         "it has 2 'vertex' lines, not three per facet"),
        (b"solid x\nvertex 0 0 0\nvertex 1 0\nvertex 0 1 0\n", "a 'vertex' line does not hold three numbers"),
    ],
)
def test_broken_files_get_a_sentence(data, sentence):
    with pytest.raises(ShapeError, match=f"^decode: broken.stl: {sentence}$"):
        read(data, "broken.stl")
