"""Tabletop RGB-D open-set scenes from meshes, written as COCO json + RGB + depth (deterministic per seed).

Each scene drops known and unknown meshes onto a textured table with the Bullet physics engine and renders it on
the CPU (`tabletop_scene`). The dataset folder holds::

    annotations.json          COCO instances: RLE masks (visible part), boxes, categories (known ones first)
    images/NNNNNN.png         RGB, 8 bit
    depth/NNNNNN.png          depth, 16UC1 millimetres (0 = no surface), aligned with the RGB image
    depth_m/NNNNNN.npy        depth, 32FC1 metres (float32 numpy array), the same values unrounded

Beyond COCO, each image has ``depth_file`` and ``depth_m_file`` (relative to the dataset folder), ``camera_info``
(sensor_msgs/CameraInfo fields) and ``world_from_camera`` (4x4, optical frame); each annotation has ``known``,
``pose`` (``position_m``: centre of the object's mesh box, ``orientation_xyzw``: its axes, both in the camera
optical frame), ``size_m`` (the box's sides), ``camera_box`` (``center_m``, ``size_m``: the posed mesh bounded along
the camera axes) and, with ``--amodal``, ``amodal_segmentation`` + ``amodal_area``. ``info.known_classes`` lists the
known class names in category-id order (``DATASETS.KNOWN_CLASSES``).

    python -m semseg_core.data.tabletop --out datasets/tabletop/test --split test --num-images 50 --seed 1
    python -m semseg_core.data.tabletop --out my_set --meshes my_objects --mesh-unit-scale 0.001 --split train
"""

import argparse
import dataclasses
import json
import os
import sys
from typing import Dict, List, Optional, Sequence

import cv2
import numpy as np
from tqdm import tqdm

from semseg_core.atomic_io import atomic_open
from semseg_core.data.synthetic import mask_to_annotation
from semseg_core.data.tabletop_assets import (MeshAsset, MeshError, builtin_assets, folder_assets, scene_pools,
                                             split_assets)
from semseg_core.data.tabletop_camera import DEFAULT_INTRINSICS, CameraIntrinsics, depth_to_millimetres
from semseg_core.data.tabletop_scene import SceneOptions, TabletopScene, render_tabletop_scene

_SPLIT_CODE = {"train": 0, "test": 1}
DEFAULT_TEST_OPENNESS = 0.5
# Split code 2 keeps the tabletop seeds apart from the shape scenes' (0, 1) should both ever share a seed.
_SEED_DOMAIN = 2


def _floats(values) -> List[float]:
    return [round(float(v), 6) for v in np.asarray(values).ravel()]


def _annotation(obj, category_id: int, ann_id: int, image_id: int) -> Dict:
    ann = {"id": ann_id, "image_id": image_id, "category_id": category_id}
    ann.update(mask_to_annotation(obj.visible_mask))
    ann["known"] = bool(obj.asset.known)
    ann["pose"] = {"position_m": _floats(obj.position), "orientation_xyzw": _floats(obj.orientation)}
    ann["size_m"] = _floats(obj.size)
    ann["camera_box"] = {"center_m": _floats(obj.camera_box_center), "size_m": _floats(obj.camera_box_size)}
    if obj.amodal_mask is not None:
        amodal = mask_to_annotation(obj.amodal_mask)
        ann["amodal_segmentation"] = amodal["segmentation"]
        ann["amodal_area"] = amodal["area"]
    return ann


def _write_scene(out_dir: str, image_id: int, scene: TabletopScene) -> Dict:
    name = f"{image_id:06d}"
    paths = {"images": f"images/{name}.png", "depth": f"depth/{name}.png", "depth_m": f"depth_m/{name}.npy"}
    for rel, data in ((paths["images"], cv2.cvtColor(scene.rgb, cv2.COLOR_RGB2BGR)),
                      (paths["depth"], depth_to_millimetres(scene.depth_m))):
        path = os.path.join(out_dir, rel)
        if not cv2.imwrite(path, data):
            raise OSError(f"could not write {path}")
    with atomic_open(os.path.join(out_dir, paths["depth_m"]), "wb") as f:
        np.save(f, scene.depth_m.astype(np.float32))
    return {"id": image_id, "file_name": f"{name}.png", "height": scene.intrinsics.height,
            "width": scene.intrinsics.width, "depth_file": paths["depth"], "depth_m_file": paths["depth_m"],
            "camera_info": scene.intrinsics.camera_info(),
            "world_from_camera": [_floats(row) for row in scene.world_from_camera]}


def generate_tabletop_dataset(
    out_dir: str,
    assets: Sequence[MeshAsset],
    num_images: int,
    seed: int,
    *,
    split: str = "test",
    openness: Optional[float] = None,
    intrinsics: CameraIntrinsics = DEFAULT_INTRINSICS,
    options: Optional[SceneOptions] = None,
    progress: bool = True,
) -> str:
    """Render ``num_images`` scenes into ``out_dir`` (see the module docstring); return the json path.

    Args:
        out_dir: the dataset folder (created; existing files of the same names are replaced).
        assets: the meshes (`builtin_assets()` or `folder_assets(folder)`); category ids follow their order,
            known ones first.
        num_images: number of scenes.
        seed: scene i is a pure function of (seed, split, i).
        split: "train" (default openness 0: known objects only) or "test" (default openness 0.5).
        openness: expected share of objects that are not known per scene: clutter meshes in a training scene,
            unknown ones in a test scene; overrides the split's default and ``options``.
        intrinsics: the camera.
        options: clutter, camera-pose ranges and amodal masks (`SceneOptions` defaults when None).
        progress: show a progress bar.
    """
    if split not in _SPLIT_CODE:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    options = options or SceneOptions()
    if openness is None:
        openness = 0.0 if split == "train" else DEFAULT_TEST_OPENNESS
    options = dataclasses.replace(options, openness=float(openness))
    known, unknown = split_assets(assets)
    _, others = scene_pools(assets, split)
    if openness > 0 and not others:
        kind = "clutter (a clutter/ subfolder; built-in: the first half of the blobs)" if split == "train" \
            else "unknown"
        raise ValueError(f"openness {openness} in {split} scenes needs {kind} meshes; none given")
    names = [a.name for a in known + unknown]
    if len(set(names)) != len(names):
        raise ValueError(f"class names must be unique, got duplicates in {names}")
    category_ids = {a.name: i + 1 for i, a in enumerate(known + unknown)}

    for sub in ("images", "depth", "depth_m"):
        os.makedirs(os.path.join(out_dir, sub), exist_ok=True)
    images, annotations = [], []
    for index in tqdm(range(num_images), desc=f"tabletop {split}", disable=not progress, unit="scene"):
        rng = np.random.default_rng([int(seed), _SEED_DOMAIN, _SPLIT_CODE[split], index])
        scene = render_tabletop_scene(rng, known, others, intrinsics, options)
        image_id = index + 1
        images.append(_write_scene(out_dir, image_id, scene))
        for obj in scene.objects:
            annotations.append(_annotation(obj, category_ids[obj.asset.name], len(annotations) + 1, image_id))

    categories = [{"id": category_ids[a.name], "name": a.name,
                   "supercategory": "known" if a.known else "clutter" if a.clutter else "unknown",
                   "mesh": os.path.basename(a.path)} for a in known + unknown]
    info = {
        "description": "semseg_ros tabletop RGB-D open-set scenes (pybullet physics + TinyRenderer)",
        "split": split, "seed": int(seed), "openness": float(openness), "num_images": int(num_images),
        "image_size": [intrinsics.height, intrinsics.width],
        "min_objects": options.min_objects, "max_objects": options.max_objects,
        "drop_radius_m": options.drop_radius_m, "amodal": options.amodal,
        "camera_distance_m": _floats(options.camera_distance_m),
        "camera_elevation_deg": _floats(options.camera_elevation_deg),
        "known_classes": [a.name for a in known], "unknown_classes": [a.name for a in unknown if not a.clutter],
        "clutter_classes": [a.name for a in unknown if a.clutter],
        "depth_units": {"depth_file": "16UC1 millimetres, 0 = invalid", "depth_m_file": "32FC1 metres, 0 = invalid"},
    }
    doc = {"info": info, "images": images, "annotations": annotations, "categories": categories}
    json_path = os.path.join(out_dir, "annotations.json")
    with atomic_open(json_path, "w", encoding="utf-8") as f:
        json.dump(doc, f)
    return json_path


def read_depth_m(dataset_dir: str, image: Dict) -> np.ndarray:
    """The float32 metres depth of one ``images`` entry of a tabletop json."""
    path = os.path.join(dataset_dir, image["depth_m_file"])
    try:
        depth = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: cannot read the depth array ({err})") from None
    if depth.shape != (image["height"], image["width"]) or depth.dtype != np.float32:
        raise ValueError(f"{path}: expected float32 {image['height']}x{image['width']} depth, "
                         f"got {depth.dtype} {depth.shape}")
    return depth


def load_assets(meshes: Optional[str], mesh_unit_scale: float = 1.0,
                num_builtin_unknown: Optional[int] = None) -> List[MeshAsset]:
    """A user's mesh folder (``known/`` + ``unknown/``) or, without one, the built-in set."""
    if meshes:
        return folder_assets(meshes, unit_scale=mesh_unit_scale)
    return builtin_assets(num_unknown=num_builtin_unknown)


def build_parser(prog: str = "python -m semseg_core.data.tabletop") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="Render tabletop RGB-D open-set scenes from meshes (COCO json + RGB + depth).")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--meshes", default=None,
                        help="your mesh folder with known/ and unknown/ subfolders of .obj/.stl files "
                        "(default: the built-in household set from pybullet_data)")
    parser.add_argument("--mesh-unit-scale", type=float, default=1.0,
                        help="multiplies your meshes' coordinates to give metres (0.001 for millimetres)")
    parser.add_argument("--split", choices=("train", "test"), default="test")
    parser.add_argument("--num-images", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--openness", type=float, default=None,
                        help="expected share of objects that are not known per scene: clutter in train, unknown in "
                        "test scenes (default: 0 train, 0.5 test)")
    parser.add_argument("--min-objects", type=int, default=SceneOptions.min_objects)
    parser.add_argument("--max-objects", type=int, default=SceneOptions.max_objects)
    parser.add_argument("--drop-radius", type=float, default=SceneOptions.drop_radius_m,
                        help="metres from the table centre within which objects are dropped (clutter density)")
    parser.add_argument("--amodal", action="store_true", help="also write full (unoccluded) masks")
    d = DEFAULT_INTRINSICS
    parser.add_argument("--width", type=int, default=d.width)
    parser.add_argument("--height", type=int, default=d.height)
    parser.add_argument("--fx", type=float, default=d.fx)
    parser.add_argument("--fy", type=float, default=d.fy)
    parser.add_argument("--cx", type=float, default=d.cx)
    parser.add_argument("--cy", type=float, default=d.cy)
    return parser


def main(argv: Optional[Sequence[str]] = None, prog: str = "python -m semseg_core.data.tabletop") -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    try:
        intrinsics = CameraIntrinsics(width=args.width, height=args.height, fx=args.fx, fy=args.fy,
                                      cx=args.cx, cy=args.cy)
        options = SceneOptions(min_objects=args.min_objects, max_objects=args.max_objects,
                               drop_radius_m=args.drop_radius, amodal=args.amodal)
        assets = load_assets(args.meshes, args.mesh_unit_scale)
        path = generate_tabletop_dataset(args.out, assets, args.num_images, args.seed, split=args.split,
                                         openness=args.openness, intrinsics=intrinsics, options=options)
    except (MeshError, ValueError) as err:
        parser.error(str(err))
    print(f"wrote {args.num_images} scenes and {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
