"""Sharding mesh files the project did not write: the sample models Debian ships for the Open Asset Import
Library (package assimp-testmodels), some of them broken on purpose by their authors.

The corpus is assembled at test time from the installed package: every .obj, .ply, .off, .stl, .gltf and
.glb file (100 in assimp-testmodels 5.2.5), with the files beside them that they refer to (glTF buffers,
OBJ materials), sharded in-process as the `generic` source. Every file must be a sample or a logged
failure whose reason is a sentence, each format must convert the files listed here, and every file
plain trimesh reads must be read too, except those listed with the reason for refusing them.
"""

from __future__ import annotations

import io
import json
import shutil
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import trimesh

from sharding.meshio import POINT_SUFFIXES
from sharding.shard_corpus import main as shard_corpus

MODELS = Path("/usr/share/assimp/models")
FORMATS = (".obj", ".ply", ".off", ".stl", ".gltf", ".glb")

pytestmark = pytest.mark.skipif(
    not MODELS.is_dir(), reason="needs Debian's assimp-testmodels (apt-get install assimp-testmodels; CI installs it)")

# Files per format in the package, and how many of them become samples.
FILES = {".obj": 25, ".ply": 9, ".off": 5, ".stl": 8, ".gltf": 48, ".glb": 5}
CONVERTED = {".obj": 22, ".ply": 7, ".off": 2, ".stl": 8, ".gltf": 32, ".glb": 3}
# Every failure, by path in the corpus: (stage, the reason's text after the file name).
FAILURES = {
    "OBJ/number_formats.obj": ("decode", "a vertex line holds a coordinate that is not a number"),
    "OFF/invalid.off": ("decode", "face 1 has 0 corners; a face needs at least 3"),
    "PLY/pond.0.ply": ("decode", "the header declares 70051 vertices, the data holds 70048"),
    "glTF/BoxTextured-glTF-Binary/BoxTextured.glb": ("decode", "its GLB header declares 17754 bytes, the file holds 17721"),
    "glTF/IncorrectVertexArrays/Cube_v1.gltf": ("decode", "primitive 0 of mesh 1 has 35 triangle indices, not a multiple of 3"),
    "glTF2/BoxWithInfinites-glTF-Binary/BoxWithInfinites.glb": ("validate", "72 non-finite vertex coordinates"),
    "glTF2/IncorrectVertexArrays/Cube.gltf": ("decode", "primitive 0 of mesh 1 has 35 triangle indices, not a multiple of 3"),
    "glTF2/IndexOutOfRange/AllIndicesOutOfRange.gltf": ("decode", "primitive 0 of mesh 0 refers to vertex 65535, past its 24 vertices"),
    "glTF2/IndexOutOfRange/IndexOutOfRange.gltf": ("decode", "primitive 0 of mesh 0 refers to vertex 255, past its 24 vertices"),
    "glTF2/MissingBin/BoxTextured.gltf": ("decode", "the buffer 'BoxTextured0.bin' it refers to is missing"),
    "glTF2/RecursiveNodes/RecursiveNodes.gltf": ("decode", "node 0 is its own ancestor (the node graph has a cycle)"),
    "glTF2/SchemaFailures/sceneWrongType.gltf": ("decode", "its default scene is not the index of one of its scenes"),
    "glTF2/TestNoRootNode/NoScene.gltf": ("decode", "it holds no meshes"),
    "glTF2/TestNoRootNode/SceneWithoutNodes.gltf": ("decode", "it holds no meshes"),
    **{f"glTF2/glTF-Asset-Generator/Mesh_PrimitiveMode/Mesh_PrimitiveMode_{n:02d}.gltf":
       ("decode", f"it holds only {mode} primitives: lines have no surface to sample")
       for n, mode in ((1, "LINES"), (2, "LINE_LOOP"), (3, "LINE_STRIP"), (8, "LINES"), (9, "LINE_LOOP"), (10, "LINE_STRIP"))},
    "glTF2/wrongTypes/badArray.gltf": ("decode", "mesh 0 has no list of primitives"),
    "invalid/OutOfMemory.off": ("decode", "the header declares 353535235358 vertices and 6 faces, more than the 14 lines "
                                          "after it can hold"),
    "invalid/empty.obj": ("decode", "it is empty"),
    "invalid/empty.off": ("decode", "it is empty"),
    "invalid/empty.ply": ("decode", "it is empty"),
    "invalid/malformed.obj": ("decode", "face 6 refers to vertex 0; OBJ vertex indices start at 1"),
}
# Files plain trimesh makes something of that we refuse, and why refusing is right.
TRIMESH_ONLY = {
    "OFF/invalid.off": "its face lines hold no corners; trimesh keeps its 3 vertices as a cloud",
    "glTF2/glTF-Asset-Generator/Mesh_PrimitiveMode/Mesh_PrimitiveMode_01.gltf": "lines: trimesh reads a path, no surface",
    "glTF2/glTF-Asset-Generator/Mesh_PrimitiveMode/Mesh_PrimitiveMode_08.gltf": "lines: trimesh reads a path, no surface",
}


def mesh_files() -> list[Path]:
    return sorted(p for p in MODELS.rglob("*") if p.is_file() and p.suffix.lower() in FORMATS)


def assemble(root: Path) -> Path:
    """The mesh files under their package paths, plus the non-sample files in their folders (buffers,
    materials, textures): a folder's point-cloud-suffixed files (a readme.txt) would become inputs."""
    for path in mesh_files():
        for sibling in path.parent.iterdir():
            if sibling.is_file() and (sibling == path or sibling.suffix.lower() not in FORMATS + POINT_SUFFIXES):
                target = root / sibling.relative_to(MODELS)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(sibling, target)
    return root


@pytest.fixture(scope="module")
def sharded(tmp_path_factory) -> tuple[Path, dict, list[dict]]:
    """(corpus folder, manifest, failure records) of the sharded corpus."""
    tmp = tmp_path_factory.mktemp("real")
    corpus = assemble(tmp / "corpus")
    config = tmp / "job.yaml"
    config.write_text("min_points: 1\n")  # count what decodes: tiny clouds are kept here
    out = tmp / "shards"
    code = shard_corpus(["--config", str(config), "--source", f"generic:{corpus}", "--output", str(out),
                         "--in-process", "--no-progress", "--num-points", "2048", "--shard-size", "50",
                         "--max-failure-ratio", "1.0"])
    assert code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    return corpus, manifest, errors


def by_format(paths) -> Counter:
    return Counter(Path(p).suffix.lower() for p in paths)


def failed_paths(errors: list[dict]) -> dict[str, dict]:
    """Failure records by the file's path in the corpus (a record's path is `<corpus>!<member>`)."""
    return {e["path"].split("!", 1)[1]: e for e in errors}


def test_every_file_is_a_sample_or_a_logged_failure(sharded):
    _, manifest, errors = sharded
    assert by_format(p.name for p in mesh_files()) == FILES
    assert manifest["total_samples"] + manifest["total_failed"] == sum(FILES.values())
    assert manifest["total_failed"] == len(errors)


def test_each_format_converts_its_files(sharded):
    _, _, errors = sharded
    failed = by_format(failed_paths(errors))
    assert {ext: FILES[ext] - failed[ext] for ext in FILES} == CONVERTED


def test_every_failure_has_its_reason_in_a_sentence(sharded):
    _, _, errors = sharded
    got = {path: (e["stage"], e["reason"].split(": ", 1)[1] if e["stage"] == "decode" else e["reason"])
           for path, e in failed_paths(errors).items()}
    assert got == FAILURES
    assert not [reason for _, reason in got.values() if reason.split(":")[0].endswith(("Error", "Exception"))]


def plain_trimesh_converts(path: Path) -> bool:
    """What `trimesh.load` makes of the file, keeping vertex-only files as point clouds: a surface with
    area, or a cloud of finite points."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loaded = trimesh.load(io.BytesIO(path.read_bytes()), file_type=path.suffix[1:].lower(),
                                  resolver=trimesh.resolvers.FilePathResolver(str(path)))
            geometry = loaded.to_geometry() if isinstance(loaded, trimesh.Scene) else loaded
            if isinstance(geometry, trimesh.Trimesh) and len(geometry.faces):
                return bool(np.isfinite(geometry.vertices).all() and geometry.area > 0)
            vertices = np.asarray(getattr(geometry, "vertices", []), dtype=float)
            return bool(len(vertices) and np.isfinite(vertices).all())
    except Exception:  # whatever trimesh fails on is a file it does not read
        return False


def test_we_read_more_than_plain_trimesh_and_all_it_reads_but_what_we_refuse_on_purpose(sharded):
    _, _, errors = sharded
    theirs = {str(p.relative_to(MODELS)) for p in mesh_files() if plain_trimesh_converts(p)}
    ours = {str(p.relative_to(MODELS)) for p in mesh_files()} - set(failed_paths(errors))
    assert theirs - ours == set(TRIMESH_ONLY)
    assert len(theirs) == 69 and len(ours) == sum(CONVERTED.values()) == 74
