"""Object meshes for the tabletop scenes: the built-in household set and a user's own mesh folder.

A mesh set is a list of `MeshAsset` (one class per mesh file). Known classes are learnt; unknown ones appear only
in test scenes; clutter ones only in training scenes, where they stand for the unlabelled things of a robot's
training images (COCO's training images hold unannotated objects the same way): training keeps only known-class
annotations, so the model learns them as background, and the test scenes' unknown objects stay never seen. A
user's folder has the split in its layout::

    my_objects/known/<class>.obj|.stl|.glb  (any depth below known/; textures of the .mtl or the .glb are used)
    my_objects/unknown/<class>.obj|.stl|.glb
    my_objects/clutter/<class>.obj|.stl|.glb   (optional)

The class name is the file name without its extension; it must be unique over both folders. Meshes are in metres
unless a unit scale is given (0.001 for millimetres). A .glb is converted once to OBJ (`tabletop_gltf`).

The built-in set uses meshes that the ``pybullet`` wheel ships in ``pybullet_data`` (zlib licence, like Bullet):
textured duck, domino, soccer ball and toy block, plus mug, teddy, bunny, lego brick and a toy can as known
classes, and the 1000 procedurally generated "random_urdfs" blobs: the first half (by name) as clutter, the
second half as unknown objects.
"""

import dataclasses
import glob
import os
import re
import struct
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

from semseg_core.data.tabletop_gltf import GltfError, glb_to_obj

MESH_EXTENSIONS = (".obj", ".stl", ".glb")
UNSUPPORTED_EXTENSIONS = {".gltf": "export it as binary .glb or OBJ (e.g. Blender: File > Export)",
                          ".ply": "convert it to OBJ or STL"}

# Built-in known meshes: (class name, file under pybullet_data, largest side in metres after scaling).
BUILTIN_KNOWN: Tuple[Tuple[str, str, float], ...] = (
    ("duck", "duck.obj", 0.10),
    ("mug", "objects/mug.obj", 0.10),
    ("teddy", "teddy2_VHACD_CHs.obj", 0.14),
    ("bunny", "bunny.obj", 0.10),
    ("lego", "lego/lego.obj", 0.07),
    ("toy_block", "jenga/jenga.obj", 0.10),  # a unit cube with a printed wood texture
    ("domino", "domino/domino.obj", 0.08),
    ("soccerball", "soccerball.obj", 0.09),
    ("can", "toys/cylinder.obj", 0.11),
)
BUILTIN_UNKNOWN_PATTERN = "random_urdfs/*/*.obj"
BUILTIN_UNKNOWN_SIZE_M = 0.09


class MeshError(ValueError):
    """A mesh file or mesh folder that cannot be used (the message names the file and the problem)."""


@dataclass(frozen=True)
class MeshAsset:
    """One object class: a mesh file, whether it is known, and the scale that makes its units metres.

    Args:
        name: class name (category name in the COCO json).
        path: the OBJ or STL file.
        known: True for a class the model learns, False for one it never learns.
        scale: multiplies the mesh coordinates to give metres.
        textured: the OBJ's material has a diffuse texture (kept when rendering); untextured meshes get a random
            colour per scene.
        clutter: (not known) met only in training scenes, never annotated for training; False: an unknown
            class met only in test scenes.
    """
    name: str
    path: str
    known: bool
    scale: float
    textured: bool
    clutter: bool = False


@dataclass(frozen=True)
class MeshGeometry:
    """Vertices (metres, mesh frame, after scaling) and the axis-aligned box around them."""
    vertices: np.ndarray  # (V, 3) float64
    low: np.ndarray       # (3,)
    high: np.ndarray      # (3,)

    @property
    def center(self) -> np.ndarray:
        return (self.low + self.high) / 2.0

    @property
    def size(self) -> np.ndarray:
        return self.high - self.low


def read_vertices(path: str) -> np.ndarray:
    """All vertex positions of an OBJ (``v`` lines) or STL (binary or ASCII) file, (V, 3) float64."""
    ext = os.path.splitext(path)[1].lower()
    if not os.path.isfile(path):
        raise MeshError(f"mesh file not found: {path}")
    if ext == ".obj":
        rows = []
        with open(path, "r", encoding="utf-8", errors="replace") as f:
            for line_no, line in enumerate(f, 1):
                if line.startswith("v "):
                    parts = line.split()
                    try:
                        rows.append((float(parts[1]), float(parts[2]), float(parts[3])))
                    except (IndexError, ValueError):
                        raise MeshError(f"{path}:{line_no}: malformed vertex line {line.strip()!r}") from None
        vertices = np.asarray(rows, dtype=np.float64).reshape(-1, 3)
    elif ext == ".stl":
        with open(path, "rb") as f:
            data = f.read()
        count = struct.unpack_from("<I", data, 80)[0] if len(data) >= 84 else -1
        if count >= 0 and len(data) == 84 + 50 * count:
            records = np.frombuffer(data, dtype=np.dtype([("normal", "<f4", 3), ("v", "<f4", (3, 3)),
                                                          ("attr", "<u2")]), count=count, offset=84)
            vertices = records["v"].reshape(-1, 3).astype(np.float64)
        else:
            text = data.decode("ascii", errors="replace")
            found = re.findall(r"vertex\s+(\S+)\s+(\S+)\s+(\S+)", text)
            try:
                vertices = np.asarray(found, dtype=np.float64).reshape(-1, 3)
            except ValueError:
                raise MeshError(f"{path}: malformed ASCII STL vertex") from None
    else:
        raise MeshError(f"{path}: unsupported mesh type {ext!r}; use .obj or .stl (a .glb goes through glb_to_obj)")
    if len(vertices) < 4:
        raise MeshError(f"{path}: has {len(vertices)} vertices; a mesh needs at least 4 (empty or not a mesh?)")
    if not np.all(np.isfinite(vertices)):
        raise MeshError(f"{path}: has non-finite vertex coordinates")
    return vertices


def mesh_geometry(asset: MeshAsset) -> MeshGeometry:
    vertices = read_vertices(asset.path) * asset.scale
    low, high = vertices.min(axis=0), vertices.max(axis=0)
    if np.any(high - low <= 0):
        raise MeshError(f"{asset.path}: the mesh is flat (extent {high - low} m); it cannot stand on a table")
    return MeshGeometry(vertices, low, high)


def has_texture(path: str) -> bool:
    """Whether an OBJ's material library names a diffuse texture map that exists."""
    if not path.lower().endswith(".obj"):
        return False
    folder = os.path.dirname(path)
    with open(path, "r", encoding="utf-8", errors="replace") as f:
        libraries = [line.split(None, 1)[1].strip() for line in f if line.startswith("mtllib ")]
    for library in libraries:
        mtl = os.path.join(folder, library)
        if not os.path.isfile(mtl):
            continue
        with open(mtl, "r", encoding="utf-8", errors="replace") as f:
            maps = [line.split(None, 1)[1].strip() for line in f if line.strip().startswith("map_Kd ")]
        if any(os.path.isfile(os.path.join(os.path.dirname(mtl), m)) for m in maps):
            return True
    return False


def _scaled_to(path: str, name: str, known: bool, largest_side_m: float) -> MeshAsset:
    size = np.ptp(read_vertices(path), axis=0).max()
    return MeshAsset(name, path, known, largest_side_m / float(size), has_texture(path))


def pybullet_data_path() -> str:
    """The ``pybullet_data`` folder of the installed pybullet wheel."""
    try:
        import pybullet_data  # a package of the pybullet wheel; imported here so this module works without it
    except ImportError:
        raise MeshError("the built-in meshes come with the pybullet package (pybullet_data); "
                        "install the project requirements (make setup)") from None
    return pybullet_data.getDataPath()


def builtin_assets(num_unknown: Optional[int] = None) -> List[MeshAsset]:
    """The built-in mesh set: the known household meshes, then the procedural unknown blobs (sorted by name).

    Args:
        num_unknown: use only the first N unknown blobs (all 1000 when None).
    """
    root = pybullet_data_path()
    assets = [_scaled_to(os.path.join(root, rel), name, True, side) for name, rel, side in BUILTIN_KNOWN]
    blobs = sorted(glob.glob(os.path.join(root, BUILTIN_UNKNOWN_PATTERN)))
    if num_unknown is not None:
        blobs = blobs[:num_unknown]
    usable = []
    for path in blobs:
        name = "blob_" + os.path.splitext(os.path.basename(path))[0]
        try:
            usable.append(_scaled_to(path, name, False, BUILTIN_UNKNOWN_SIZE_M))
        except MeshError:
            continue  # pybullet_data ships a few broken blobs (e.g. NaN vertices in 168.obj): not usable
    half = len(usable) // 2
    return assets + [dataclasses.replace(blob, clutter=index < half) for index, blob in enumerate(usable)]


def _mesh_files(folder: str) -> List[str]:
    found = []
    for dirpath, _, files in os.walk(folder):
        for file in sorted(files):
            ext = os.path.splitext(file)[1].lower()
            path = os.path.join(dirpath, file)
            if ext in UNSUPPORTED_EXTENSIONS:
                raise MeshError(f"{path}: {ext} meshes are not supported; {UNSUPPORTED_EXTENSIONS[ext]}")
            if ext in MESH_EXTENSIONS:
                found.append(path)
    return sorted(found)


def folder_assets(folder: str, unit_scale: float = 1.0) -> List[MeshAsset]:
    """The meshes of a user's folder with ``known/`` and ``unknown/`` subfolders (see the module docstring).

    Args:
        folder: the mesh folder.
        unit_scale: multiplies the mesh coordinates to give metres (0.001 for meshes in millimetres).
    """
    if not os.path.isdir(folder):
        raise MeshError(f"mesh folder not found: {folder}")
    if not unit_scale > 0:
        raise MeshError(f"unit scale must be > 0, got {unit_scale}")
    assets, seen = [], {}
    for split in ("known", "unknown", "clutter"):
        sub = os.path.join(folder, split)
        if not os.path.isdir(sub):
            if split == "known":
                raise MeshError(f"{folder}: needs a 'known' subfolder with the meshes of the classes to learn "
                                "(and optionally an 'unknown' one with meshes met only at test time, a 'clutter' "
                                "one with unlabelled things for training scenes)")
            continue
        for path in _mesh_files(sub):
            name = os.path.splitext(os.path.basename(path))[0]
            if name in seen:
                raise MeshError(f"class name {name!r} is used by two meshes: {seen[name]} and {path}; "
                                "class names (file names without extension) must be unique")
            seen[name] = path
            if path.lower().endswith(".glb"):
                try:
                    path = glb_to_obj(path)
                except GltfError as err:
                    raise MeshError(str(err)) from None
            read_vertices(path)  # a bad file fails here, naming itself
            assets.append(MeshAsset(name, path, split == "known", float(unit_scale), has_texture(path),
                                    clutter=split == "clutter"))
    if not any(a.known for a in assets):
        raise MeshError(f"{os.path.join(folder, 'known')}: no mesh files ({', '.join(MESH_EXTENSIONS)})")
    return assets


def split_assets(assets: Sequence[MeshAsset]) -> Tuple[List[MeshAsset], List[MeshAsset]]:
    """(known, not known: unknown and clutter) in the given order: the json's category order."""
    return [a for a in assets if a.known], [a for a in assets if not a.known]


def scene_pools(assets: Sequence[MeshAsset], split: str) -> Tuple[List[MeshAsset], List[MeshAsset]]:
    """(known, the other objects a scene of ``split`` draws from): clutter in training, unknown in test scenes."""
    known, others = split_assets(assets)
    return known, [a for a in others if a.clutter == (split == "train")]
