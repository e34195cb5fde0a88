"""glTF 1.0 assets (the collada2gltf era, 2015 to 2017) rewritten as glTF 2.0 documents, so that one reader
serves both versions.

1.0 keeps its collections in objects keyed by id, puts `byteStride` on accessors, lets a node hold
several meshes, and stores a binary glTF's body in the buffer `binary_glTF` (KHR_binary_glTF). The
rewrite turns ids into indices, gives every accessor a buffer view of its own stride, hangs extra
meshes of a node on new child nodes, and makes `binary_glTF` buffer 0, the GLB binary chunk.
"""

from __future__ import annotations

BINARY_BUFFER = "binary_glTF"


def is_v1(document: dict) -> bool:
    asset = document.get("asset")
    version = str(asset.get("version", "")) if isinstance(asset, dict) else ""
    return version.startswith("1") or (not version and isinstance(document.get("meshes"), dict))


def upgrade(document: dict) -> dict:
    """The glTF 2.0 form of a 1.0 document (geometry only). Unknown ids raise KeyError."""
    buffers = sorted(document.get("buffers", {}).items(), key=lambda item: item[0] != BINARY_BUFFER)
    buffer_index = {key: i for i, (key, _) in enumerate(buffers)}
    old_views = document.get("bufferViews", {})
    views, accessors, accessor_index = [], [], {}
    for i, (key, accessor) in enumerate(document.get("accessors", {}).items()):
        view = old_views[accessor["bufferView"]]
        buffer = buffers[buffer_index[view["buffer"]]][1]
        start = view.get("byteOffset", 0)
        views.append({"buffer": buffer_index[view["buffer"]], "byteOffset": start,
                      "byteLength": view.get("byteLength") or buffer.get("byteLength", 0) - start,
                      **({"byteStride": accessor["byteStride"]} if accessor.get("byteStride") else {})})
        accessors.append({**{k: v for k, v in accessor.items() if k not in ("bufferView", "byteStride")},
                          "bufferView": i})
        accessor_index[key] = i
    mesh_index = {key: i for i, key in enumerate(document.get("meshes", {}))}
    meshes = [{"primitives": [_primitive(p, accessor_index) for p in mesh.get("primitives", [])]}
              for mesh in document.get("meshes", {}).values()]
    node_index = {key: i for i, key in enumerate(document.get("nodes", {}))}
    nodes, extra = [], []
    for node in document.get("nodes", {}).values():
        placed = [mesh_index[m] for m in node.get("meshes", [])]
        children = [node_index[c] for c in node.get("children", [])]
        for more in placed[1:]:  # a 2.0 node holds one mesh: the others hang below it, untransformed
            children.append(len(node_index) + len(extra))
            extra.append({"mesh": more})
        upgraded = {k: node[k] for k in ("matrix", "translation", "rotation", "scale") if k in node}
        nodes.append({**upgraded, "children": children, **({"mesh": placed[0]} if placed else {})})
    scene_index = {key: i for i, key in enumerate(document.get("scenes", {}))}
    scenes = [{"nodes": [node_index[n] for n in scene.get("nodes", [])]}
              for scene in document.get("scenes", {}).values()]
    upgraded = {"asset": {"version": "2.0"}, "buffers": [_buffer(key, b) for key, b in buffers], "bufferViews": views,
                "accessors": accessors, "meshes": meshes, "nodes": nodes + extra}
    if scenes:
        upgraded["scenes"] = scenes
        upgraded["scene"] = scene_index[document["scene"]] if "scene" in document else 0
    return upgraded


def _buffer(key: str, buffer: dict) -> dict:
    """The binary glTF body has no file of its own: in 2.0 terms it is the GLB binary chunk (no uri)."""
    return {"byteLength": buffer.get("byteLength", 0)} if key == BINARY_BUFFER else dict(buffer)


def _primitive(primitive: dict, accessor_index: dict[str, int]) -> dict:
    upgraded = {"attributes": {k: accessor_index[v] for k, v in primitive.get("attributes", {}).items()},
                "mode": primitive.get("mode", 4)}
    if "indices" in primitive:
        upgraded["indices"] = accessor_index[primitive["indices"]]
    return upgraded
