"""Tabletop RGB-D scenes: real pybullet physics + TinyRenderer, checked against geometry computed by hand."""

import hashlib
import json
import os
import struct

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from semseg_core.data import build_dataset, get_dataset_meta, register_coco_openset
from semseg_core.data.tabletop import generate_tabletop_dataset, main, read_depth_m
from semseg_core.data.tabletop_assets import MeshError, builtin_assets, folder_assets, read_vertices
from semseg_core.data.tabletop_camera import CameraIntrinsics
from semseg_core.data.tabletop_scene import SceneOptions

from .coco_fixtures import small_cfg

SMALL_CAMERA = CameraIntrinsics(width=320, height=240, fx=300.0, fy=310.0, cx=161.0, cy=118.5)
CUBE_SIDE_M = 0.06


def write_cube_obj(path, side):
    """An axis-aligned cube centred on the origin, as OBJ text (8 vertices, 12 triangles wound outwards: the
    renderer culls back faces)."""
    h = side / 2.0
    corners = np.array([(x, y, z) for x in (-h, h) for y in (-h, h) for z in (-h, h)])
    faces = [(0, 1, 3), (0, 3, 2), (4, 5, 7), (4, 7, 6), (0, 1, 5), (0, 5, 4),
             (2, 3, 7), (2, 7, 6), (0, 2, 6), (0, 6, 4), (1, 3, 7), (1, 7, 5)]
    with open(path, "w") as f:
        f.writelines(f"v {x} {y} {z}\n" for x, y, z in corners)
        for a, b, c in faces:
            normal = np.cross(corners[b] - corners[a], corners[c] - corners[a])
            if normal @ corners[[a, b, c]].mean(axis=0) < 0:
                b, c = c, b
            f.write(f"f {a + 1} {b + 1} {c + 1}\n")


def write_tetra_stl(path, side_mm):
    """A binary STL tetrahedron in millimetres (4 triangles)."""
    s = float(side_mm)
    p = np.array([[0, 0, 0], [s, 0, 0], [0, s, 0], [0, 0, s]], dtype=np.float32)
    tris = [(0, 2, 1), (0, 1, 3), (0, 3, 2), (1, 2, 3)]
    data = bytearray(80) + np.uint32(len(tris)).tobytes()
    for a, b, c in tris:
        data += np.zeros(3, np.float32).tobytes() + p[[a, b, c]].tobytes() + np.uint16(0).tobytes()
    with open(path, "wb") as f:
        f.write(bytes(data))


@pytest.fixture
def mesh_folder(tmp_path):
    folder = tmp_path / "my_objects"
    (folder / "known").mkdir(parents=True)
    (folder / "unknown").mkdir()
    write_cube_obj(folder / "known" / "cube.obj", CUBE_SIDE_M * 1000)  # millimetres, like most CAD exports
    write_tetra_stl(folder / "unknown" / "wedge.stl", 70)
    return folder


def folder_hashes(folder):
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
    return out


def test_user_folder_split_by_file_and_units(mesh_folder):
    assets = folder_assets(str(mesh_folder), unit_scale=0.001)
    assert [(a.name, a.known, a.scale) for a in assets] == [("cube", True, 0.001), ("wedge", False, 0.001)]


def test_single_object_mask_is_where_depth_is_nearer_than_the_table(mesh_folder, tmp_path):
    """One 6 cm cube: its mask must be exactly the pixels nearer than the table plane, the table pixels must have
    the depth of the plane z = 0 seen through the written intrinsics and camera pose, and the cube must rest on
    the table (centre 3 cm above it)."""
    assets = folder_assets(str(mesh_folder), unit_scale=0.001)
    out = tmp_path / "one"
    options = SceneOptions(min_objects=1, max_objects=1, drop_radius_m=0.05, camera_distance_m=(0.5, 0.5))
    json_path = generate_tabletop_dataset(str(out), assets, 1, seed=3, split="train", intrinsics=SMALL_CAMERA,
                                          options=options, progress=False)
    doc = json.load(open(json_path))
    image, = doc["images"]
    ann, = doc["annotations"]
    depth = read_depth_m(str(out), image)
    mask = mask_utils.decode(ann["segmentation"]).astype(bool)

    # Table depth by hand: the ray through pixel (u, v) is d = ((u - cx) / fx, (v - cy) / fy, 1) in the camera
    # frame (depth 1); it meets the plane z = 0 at depth t = -eye_z / (R d)_z.
    fx, _, cx, _, fy, cy = image["camera_info"]["k"][:6]
    assert (fx, fy, cx, cy) == (300.0, 310.0, 161.0, 118.5)
    pose = np.array(image["world_from_camera"])
    v, u = np.mgrid[0:240, 0:320].astype(np.float64)
    rays = np.stack([(u - cx) / fx, (v - cy) / fy, np.ones_like(u)], axis=-1)
    world_rays = rays @ pose[:3, :3].T
    table_depth = -pose[2, 3] / world_rays[..., 2]
    hit = pose[:3, 3] + world_rays * table_depth[..., None]
    on_table = (np.abs(hit[..., 0]) < 0.49) & (np.abs(hit[..., 1]) < 0.39) & (table_depth > 0)
    assert on_table.mean() > 0.9  # the camera looks at the table, 0.5 m away

    table_pixels = on_table & ~mask
    assert np.abs(depth[table_pixels] - table_depth[table_pixels]).max() < 0.002
    nearer = on_table & (depth < table_depth - 0.002)
    # The cube's sides touch the table: their lowest ~2 mm is within the tolerance, nothing else may differ.
    assert (nearer & ~mask).sum() == 0
    assert (mask & ~nearer).sum() <= 0.03 * mask.sum()
    assert ann["area"] == mask.sum() > 500

    # 16UC1 millimetres are the metres rounded.
    depth_mm = cv2.imread(str(out / image["depth_file"]), cv2.IMREAD_UNCHANGED)
    assert depth_mm.dtype == np.uint16
    assert np.array_equal(depth_mm, np.round(depth * 1000).astype(np.uint16))

    # Pose: a 6 cm cube resting on z = 0 has its centre 3 cm up; its box sides are 6 cm.
    centre_world = pose[:3, :3] @ np.array(ann["pose"]["position_m"]) + pose[:3, 3]
    assert centre_world[2] == pytest.approx(CUBE_SIDE_M / 2, abs=0.002)
    assert ann["size_m"] == pytest.approx([CUBE_SIDE_M] * 3, abs=1e-6)
    # The cube's nearest visible point is at the depth the depth image shows.
    assert depth[mask].min() == pytest.approx(ann["camera_box"]["center_m"][2] - ann["camera_box"]["size_m"][2] / 2,
                                              abs=0.004)


def test_same_seed_same_bytes_other_seed_other_scene(tmp_path):
    assets = builtin_assets(num_unknown=20)
    options = SceneOptions(min_objects=3, max_objects=4)
    runs = {}
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        generate_tabletop_dataset(str(tmp_path / name), assets, 1, seed=seed, split="test", intrinsics=SMALL_CAMERA,
                                  options=options, progress=False)
        runs[name] = folder_hashes(tmp_path / name)
    assert runs["a"] == runs["b"]
    assert set(runs["a"]) == {"annotations.json", "images/000001.png", "depth/000001.png", "depth_m/000001.npy"}
    assert runs["a"]["images/000001.png"] != runs["c"]["images/000001.png"]


def test_amodal_masks_contain_visible_masks_and_coco_loads(tmp_path):
    assets = builtin_assets(num_unknown=20)
    out = tmp_path / "set"
    json_path = generate_tabletop_dataset(
        str(out), assets, 2, seed=11, split="test", openness=0.5, intrinsics=SMALL_CAMERA,
        options=SceneOptions(min_objects=4, max_objects=6, drop_radius_m=0.08, amodal=True), progress=False)
    doc = json.load(open(json_path))
    assert doc["annotations"], "the scenes have objects"
    occluded = 0
    for ann in doc["annotations"]:
        visible = mask_utils.decode(ann["segmentation"]).astype(bool)
        amodal = mask_utils.decode(ann["amodal_segmentation"]).astype(bool)
        assert not (visible & ~amodal).any()
        assert ann["amodal_area"] >= ann["area"]
        occluded += ann["amodal_area"] > ann["area"]
    assert occluded > 0  # piles within 8 cm hide parts of objects
    known_names = doc["info"]["known_classes"]
    assert known_names[:2] == ["duck", "mug"] and not any(n.startswith("blob_") for n in known_names)
    assert {a["known"] for a in doc["annotations"]} == {True, False}

    # The project's own loader reads it as an open-set dataset; unknown blobs are not training targets.
    register_coco_openset("tabletop_unit_test", json_path, str(out / "images"), known_class_names=known_names)
    meta = get_dataset_meta("tabletop_unit_test")
    assert meta["known_class_names"] == known_names and len(meta["unknown_category_ids"]) == 20
    cfg = small_cfg(tmp_path, known=known_names, num_known=len(known_names), min_size=120, flip="none")
    train = build_dataset(cfg, "tabletop_unit_test", is_train=True)
    n_known = sum(a["known"] for a in doc["annotations"])
    assert sum(len(r["annotations"]) for r in train.records) == n_known
    item = train[0]
    assert tuple(item["image"].shape) == (3, 120, 160)
    assert item["instances"]["masks"].shape[1:] == (120, 160)
    assert int(item["instances"]["classes"].max()) < len(known_names)


def test_clutter_meshes_only_in_training_scenes_and_never_training_targets(tmp_path, mesh_folder):
    """Built-in set: the first half of the usable blobs is clutter (training scenes only), the second half the
    unknown objects of test scenes; a training scene's clutter is in the json but never a training target."""
    assets = builtin_assets(num_unknown=8)
    blobs = [a for a in assets if not a.known]
    assert len(blobs) == 8 and [a.clutter for a in blobs] == [True] * 4 + [False] * 4
    clutter_names, unknown_names = {a.name for a in blobs[:4]}, {a.name for a in blobs[4:]}
    options = SceneOptions(min_objects=3, max_objects=4, drop_radius_m=0.1)
    drawn = {}
    for split in ("train", "test"):
        json_path = generate_tabletop_dataset(str(tmp_path / split), assets, 3, seed=2, split=split, openness=0.5,
                                              intrinsics=SMALL_CAMERA, options=options, progress=False)
        doc = json.load(open(json_path))
        names = {c["id"]: c["name"] for c in doc["categories"]}
        drawn[split] = {names[a["category_id"]] for a in doc["annotations"] if not a["known"]}
        assert sorted(doc["info"]["clutter_classes"]) == sorted(clutter_names)
        assert sorted(doc["info"]["unknown_classes"]) == sorted(unknown_names)
        assert len(doc["categories"]) == 9 + 8  # the same category ids in both splits
    assert drawn["train"] and drawn["train"] <= clutter_names
    assert drawn["test"] and drawn["test"] <= unknown_names

    doc = json.load(open(tmp_path / "train" / "annotations.json"))
    known_names = doc["info"]["known_classes"]
    register_coco_openset("tabletop_clutter_test", str(tmp_path / "train" / "annotations.json"),
                          str(tmp_path / "train" / "images"), known_class_names=known_names)
    cfg = small_cfg(tmp_path, known=known_names, num_known=len(known_names), min_size=120, flip="none")
    train = build_dataset(cfg, "tabletop_clutter_test", is_train=True)
    assert sum(len(r["annotations"]) for r in train.records) == sum(a["known"] for a in doc["annotations"])

    # A user's folder: clutter/ is the clutter; training scenes with openness need it and say so.
    with pytest.raises(ValueError, match="clutter"):
        generate_tabletop_dataset(str(tmp_path / "no_clutter"), folder_assets(str(mesh_folder), 0.001), 1, seed=0,
                                  split="train", openness=0.5, intrinsics=SMALL_CAMERA, progress=False)
    (mesh_folder / "clutter").mkdir()
    write_tetra_stl(mesh_folder / "clutter" / "rag.stl", 50)
    assets = folder_assets(str(mesh_folder), unit_scale=0.001)
    assert [(a.name, a.known, a.clutter) for a in assets] == [("cube", True, False), ("wedge", False, False),
                                                             ("rag", False, True)]


def test_bad_mesh_folders_name_the_problem(tmp_path, mesh_folder):
    with pytest.raises(MeshError, match="needs a 'known' subfolder"):
        folder_assets(str(tmp_path))
    (mesh_folder / "unknown" / "scan.gltf").write_text("{}")
    with pytest.raises(MeshError, match=r"scan\.gltf: \.gltf meshes are not supported; export it as binary \.glb"):
        folder_assets(str(mesh_folder))
    (mesh_folder / "unknown" / "scan.gltf").unlink()
    (mesh_folder / "unknown" / "scan.glb").write_bytes(b"PK\x03\x04 not a glb at all")
    with pytest.raises(MeshError, match=r"scan\.glb: not a binary glTF file"):
        folder_assets(str(mesh_folder))
    (mesh_folder / "unknown" / "scan.glb").unlink()
    (mesh_folder / "unknown" / "cube.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nv 0 0 1\n")
    with pytest.raises(MeshError, match="class name 'cube' is used by two meshes"):
        folder_assets(str(mesh_folder))
    (mesh_folder / "unknown" / "cube.obj").unlink()
    (mesh_folder / "unknown" / "broken.obj").write_text("v 0 0 0\nv 1 oops 0\n")
    with pytest.raises(MeshError, match=r"broken\.obj:2: malformed vertex line"):
        folder_assets(str(mesh_folder))


def write_textured_cube_glb(path, side, rgb):
    """A cube as binary glTF 2.0 built by hand: positions (float32), uint16 indices, UVs, a 2x2 PNG base-colour
    texture of one colour, and a node that scales it by 2 and moves it 1 m up x."""
    h = side / 4.0  # the node's scale 2 doubles it to `side`
    corners = np.array([(x, y, z) for x in (-h, h) for y in (-h, h) for z in (-h, h)], np.float32)
    faces = []
    for a, b, c in [(0, 1, 3), (0, 3, 2), (4, 5, 7), (4, 7, 6), (0, 1, 5), (0, 5, 4),
                    (2, 3, 7), (2, 7, 6), (0, 2, 6), (0, 6, 4), (1, 3, 7), (1, 7, 5)]:
        normal = np.cross(corners[b] - corners[a], corners[c] - corners[a])
        faces.append((a, c, b) if normal @ corners[[a, b, c]].mean(axis=0) < 0 else (a, b, c))
    indices = np.array(faces, np.uint16).ravel()
    uvs = np.full((8, 2), 0.5, np.float32)
    ok, png = cv2.imencode(".png", np.full((2, 2, 3), rgb[::-1], np.uint8))
    blobs = [corners.tobytes(), uvs.tobytes(), indices.tobytes() + b"\0\0", png.tobytes()]
    views, offset = [], 0
    for blob in blobs:
        views.append({"buffer": 0, "byteOffset": offset, "byteLength": len(blob)})
        offset += len(blob) + (-len(blob)) % 4
    binary = b"".join(blob + b"\0" * ((-len(blob)) % 4) for blob in blobs)
    views[2]["byteLength"] = indices.nbytes
    doc = {"asset": {"version": "2.0"}, "scene": 0, "scenes": [{"nodes": [0]}],
           "nodes": [{"mesh": 0, "scale": [2, 2, 2], "translation": [1.0, 0, 0]}],
           "meshes": [{"primitives": [{"attributes": {"POSITION": 0, "TEXCOORD_0": 1}, "indices": 2, "material": 0}]}],
           "materials": [{"pbrMetallicRoughness": {"baseColorTexture": {"index": 0}}}],
           "textures": [{"source": 0}], "images": [{"bufferView": 3, "mimeType": "image/png"}],
           "buffers": [{"byteLength": len(binary)}], "bufferViews": views,
           "accessors": [{"bufferView": 0, "componentType": 5126, "count": 8, "type": "VEC3"},
                         {"bufferView": 1, "componentType": 5126, "count": 8, "type": "VEC2"},
                         {"bufferView": 2, "componentType": 5123, "count": len(indices), "type": "SCALAR"}]}
    text = json.dumps(doc).encode()
    text += b" " * ((-len(text)) % 4)
    body = struct.pack("<II", len(text), 0x4E4F534A) + text + struct.pack("<II", len(binary), 0x004E4942) + binary
    with open(path, "wb") as f:
        f.write(b"glTF" + struct.pack("<II", 2, 12 + len(body)) + body)


def test_glb_mesh_is_converted_with_its_node_transform_and_texture(tmp_path):
    folder = tmp_path / "glb_objects"
    (folder / "known").mkdir(parents=True)
    write_textured_cube_glb(folder / "known" / "red_cube.glb", CUBE_SIDE_M, (220, 20, 20))
    asset, = folder_assets(str(folder))
    assert (asset.name, asset.known, asset.textured) == ("red_cube", True, True)
    vertices = read_vertices(asset.path)
    h = CUBE_SIDE_M / 2
    assert vertices.min(axis=0) == pytest.approx([1.0 - h, -h, -h], abs=1e-6)   # scaled by 2, moved 1 m along x
    assert vertices.max(axis=0) == pytest.approx([1.0 + h, h, h], abs=1e-6)
    out = tmp_path / "scene"
    json_path = generate_tabletop_dataset(str(out), [asset], 1, seed=2, split="train", intrinsics=SMALL_CAMERA,
                                          options=SceneOptions(min_objects=1, max_objects=1), progress=False)
    doc = json.load(open(json_path))
    ann, = doc["annotations"]
    assert ann["size_m"] == pytest.approx([CUBE_SIDE_M] * 3, abs=1e-6)
    mask = mask_utils.decode(ann["segmentation"]).astype(bool)
    rgb = cv2.imread(str(out / "images" / doc["images"][0]["file_name"]))[:, :, ::-1].astype(float)
    red, green, blue = rgb[mask].mean(axis=0)
    assert red > 2 * green and red > 2 * blue  # the texture's red, under whatever light the seed drew


def test_cli_refuses_bad_arguments_with_a_message(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "x"), "--meshes", str(tmp_path / "missing")])
    assert "mesh folder not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "x"), "--fx", "0"])
    assert "focal lengths must be > 0" in capsys.readouterr().err
