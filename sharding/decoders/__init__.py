"""Mesh-format decoders: the bytes of one file in, a triangle mesh or a point cloud out.

One module per format (obj, off, ply, stl, gltf), chosen by measurement against trimesh, open3d,
assimp-py and point-cloud-utils (BENCHMARKS.md, "mesh decoders compared"). Each has `read(data, name)`
(glTF also takes `resolve(relative_uri) -> bytes` for the buffers a .gltf refers to), returning
`MeshData` with polygons fan-triangulated or `PointData` for a file with vertices and no faces, and
raising `ShapeError("decode", ...)` with a sentence that names the file and what is wrong with it.
"""
