"""Mesh-format decoders: bytes of one file in, a triangle mesh or a point cloud out.

Each format has one reader, chosen by measurement (BENCHMARKS.md, "mesh decoders"): `read(data, name,
resolve)` returns `MeshData` (polygons fan-triangulated) or `PointData` (a file with vertices and no
faces), and raises `ShapeError("decode", ...)` with a sentence naming the file and what is wrong with
it. `resolve(relative_name) -> bytes` reads a file the decoded one refers to (a glTF's buffers).
"""
