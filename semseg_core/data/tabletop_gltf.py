"""Binary glTF (.glb) meshes -> OBJ + MTL + texture, the formats pybullet loads.

Reads every triangle primitive of the default scene (node transforms applied), its positions, texture coordinates
and the first base-colour texture found (embedded image or a file beside the .glb). The whole mesh gets that one
texture, which suits scans (one texture atlas); a multi-material model keeps its shape but not its other
materials. The converted files go to a cache folder named by the file's content hash, so a conversion is done once.
"""

import hashlib
import json
import os
import struct
import tempfile
from typing import Dict, List, Optional, Tuple

import numpy as np

_GLB_MAGIC = b"glTF"
_CHUNK_JSON = 0x4E4F534A
_CHUNK_BIN = 0x004E4942
_COMPONENTS = {5120: np.int8, 5121: np.uint8, 5122: np.int16, 5123: np.uint16, 5125: np.uint32, 5126: np.float32}
_WIDTH = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT4": 16}
_TRIANGLES = 4
DEFAULT_CACHE = os.path.join(tempfile.gettempdir(), "semseg_tabletop_glb")


class GltfError(ValueError):
    """A .glb file that cannot be converted (the message names the file and the problem)."""


def _read_glb(path: str) -> Tuple[Dict, bytes]:
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 20 or data[:4] != _GLB_MAGIC:
        raise GltfError(f"{path}: not a binary glTF file (no 'glTF' header); .gltf text files are not supported")
    version, length = struct.unpack_from("<II", data, 4)
    if version != 2:
        raise GltfError(f"{path}: glTF version {version}; only version 2 is supported")
    doc, binary, offset = None, b"", 12
    while offset + 8 <= min(length, len(data)):
        chunk_length, chunk_type = struct.unpack_from("<II", data, offset)
        chunk = data[offset + 8: offset + 8 + chunk_length]
        if len(chunk) != chunk_length:
            raise GltfError(f"{path}: truncated chunk at byte {offset}")
        if chunk_type == _CHUNK_JSON:
            try:
                doc = json.loads(chunk.decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as err:
                raise GltfError(f"{path}: malformed JSON chunk ({err})") from None
        elif chunk_type == _CHUNK_BIN:
            binary = chunk
        offset += 8 + chunk_length
    if doc is None:
        raise GltfError(f"{path}: no JSON chunk")
    return doc, binary


def _view_bytes(doc: Dict, binary: bytes, index: int, path: str) -> Tuple[bytes, int]:
    view = doc["bufferViews"][index]
    if view.get("buffer", 0) != 0:
        raise GltfError(f"{path}: bufferView {index} uses an external buffer; only the embedded one is supported")
    start = view.get("byteOffset", 0)
    return binary[start:start + view["byteLength"]], view.get("byteStride", 0)


def _accessor(doc: Dict, binary: bytes, index: int, path: str) -> np.ndarray:
    acc = doc["accessors"][index]
    if "bufferView" not in acc:
        raise GltfError(f"{path}: accessor {index} has no bufferView (sparse accessors are not supported)")
    dtype = np.dtype(_COMPONENTS[acc["componentType"]]).newbyteorder("<")
    width, count = _WIDTH[acc["type"]], acc["count"]
    data, stride = _view_bytes(doc, binary, acc["bufferView"], path)
    offset = acc.get("byteOffset", 0)
    item = dtype.itemsize * width
    stride = stride or item
    if offset + stride * (count - 1) + item > len(data):
        raise GltfError(f"{path}: accessor {index} reads past the end of its bufferView")
    rows = np.lib.stride_tricks.as_strided(np.frombuffer(data, np.uint8, offset=offset),
                                           shape=(count, item), strides=(stride, 1))
    values = np.ascontiguousarray(rows).view(dtype).reshape(count, width)
    if acc.get("normalized") and dtype.kind in "iu":
        values = values.astype(np.float64) / np.iinfo(dtype).max
    return values


def _node_matrix(node: Dict) -> np.ndarray:
    if "matrix" in node:
        return np.asarray(node["matrix"], np.float64).reshape(4, 4).T  # column-major in the file
    t = np.asarray(node.get("translation", [0, 0, 0]), np.float64)
    x, y, z, w = node.get("rotation", [0, 0, 0, 1])
    s = np.asarray(node.get("scale", [1, 1, 1]), np.float64)
    r = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                  [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                  [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])
    m = np.eye(4)
    m[:3, :3] = r * s[None, :]
    m[:3, 3] = t
    return m


def _mesh_instances(doc: Dict) -> List[Tuple[int, np.ndarray]]:
    """(mesh index, world matrix) of every node of the default scene that holds a mesh."""
    nodes = doc.get("nodes", [])
    scenes = doc.get("scenes")
    if scenes:
        roots = scenes[doc.get("scene", 0)].get("nodes", [])
    elif nodes:
        children = {c for n in nodes for c in n.get("children", [])}
        roots = [i for i in range(len(nodes)) if i not in children]
    else:
        return [(i, np.eye(4)) for i in range(len(doc.get("meshes", [])))]
    found, stack = [], [(i, np.eye(4)) for i in roots]
    while stack:
        index, parent = stack.pop()
        node = nodes[index]
        world = parent @ _node_matrix(node)
        if "mesh" in node:
            found.append((node["mesh"], world))
        stack.extend((c, world) for c in node.get("children", []))
    return sorted(found, key=lambda item: item[0])


def _texture_bytes(doc: Dict, binary: bytes, material: Optional[int], glb_path: str) -> Optional[Tuple[bytes, str]]:
    if material is None:
        return None
    pbr = doc.get("materials", [])[material].get("pbrMetallicRoughness", {})
    texture = pbr.get("baseColorTexture")
    if texture is None:
        return None
    image = doc["images"][doc["textures"][texture["index"]]["source"]]
    if "bufferView" in image:
        data, _ = _view_bytes(doc, binary, image["bufferView"], glb_path)
        ext = ".jpg" if image.get("mimeType") == "image/jpeg" else ".png"
        return bytes(data), ext
    uri = image.get("uri", "")
    file = os.path.join(os.path.dirname(glb_path), uri)
    if uri and not uri.startswith("data:") and os.path.isfile(file):
        with open(file, "rb") as f:
            return f.read(), os.path.splitext(uri)[1].lower() or ".png"
    return None


def glb_to_obj(path: str, cache_dir: str = DEFAULT_CACHE) -> str:
    """Convert ``path`` (once; cached by content hash) and return the OBJ's path."""
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:16]
    stem = os.path.splitext(os.path.basename(path))[0]
    folder = os.path.join(cache_dir, digest)
    obj_path = os.path.join(folder, f"{stem}.obj")
    if os.path.isfile(obj_path):
        return obj_path
    doc, binary = _read_glb(path)
    positions, uvs, faces, texture = [], [], [], None
    try:
        for mesh_index, world in _mesh_instances(doc):
            for primitive in doc["meshes"][mesh_index]["primitives"]:
                if primitive.get("mode", _TRIANGLES) != _TRIANGLES:
                    continue
                attributes = primitive["attributes"]
                xyz = _accessor(doc, binary, attributes["POSITION"], path).astype(np.float64)
                xyz = xyz @ world[:3, :3].T + world[:3, 3]
                if "TEXCOORD_0" in attributes:
                    uv = _accessor(doc, binary, attributes["TEXCOORD_0"], path).astype(np.float64)
                else:
                    uv = np.zeros((len(xyz), 2))
                if "indices" in primitive:
                    tri = _accessor(doc, binary, primitive["indices"], path).reshape(-1, 3).astype(np.int64)
                else:
                    tri = np.arange(len(xyz)).reshape(-1, 3)
                if tri.size and (tri.min() < 0 or tri.max() >= len(xyz)):
                    raise GltfError(f"{path}: mesh {mesh_index} has triangle indices outside its vertices")
                base = sum(len(p) for p in positions)
                positions.append(xyz)
                uvs.append(uv)
                faces.append(tri + base)
                texture = texture or _texture_bytes(doc, binary, primitive.get("material"), path)
    except (KeyError, IndexError, TypeError) as err:
        raise GltfError(f"{path}: malformed glTF structure ({type(err).__name__}: {err})") from None
    if not positions or not sum(len(f) for f in faces):
        raise GltfError(f"{path}: no triangle meshes in the default scene")
    xyz, uv, tri = np.concatenate(positions), np.concatenate(uvs), np.concatenate(faces) + 1

    os.makedirs(folder, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-", dir=folder)
    lines = [f"mtllib {stem}.mtl\n", "usemtl material\n"]
    lines += [f"v {x:.7g} {y:.7g} {z:.7g}\n" for x, y, z in xyz]
    lines += [f"vt {u:.7g} {1.0 - v:.7g}\n" for u, v in uv]  # glTF's v runs downwards, OBJ's upwards
    lines += [f"f {a}/{a} {b}/{b} {c}/{c}\n" for a, b, c in tri]
    with open(os.path.join(tmp, f"{stem}.obj"), "w") as f:
        f.writelines(lines)
    material = ["newmtl material\n", "Kd 1 1 1\n"]
    if texture is not None:
        image_name = f"{stem}_basecolor{texture[1]}"
        with open(os.path.join(tmp, image_name), "wb") as f:
            f.write(texture[0])
        material.append(f"map_Kd {image_name}\n")
    with open(os.path.join(tmp, f"{stem}.mtl"), "w") as f:
        f.writelines(material)
    for name in sorted(os.listdir(tmp), key=lambda n: n.endswith(".obj")):  # the .obj last: it marks completion
        os.replace(os.path.join(tmp, name), os.path.join(folder, name))
    os.rmdir(tmp)
    return obj_path
