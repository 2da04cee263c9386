"""Synthetic open-set scenes: cluttered tabletop images with exact instance masks, written as COCO json + PNG.

Objects come from the parametric shape families of ``synthetic_shapes``. Some families are *known* (annotated
and learnable at training time); the *unknown* families appear only in test images, at a share set by
``openness``. Every image is a pure function of ``(seed, split, image index)``, so the same arguments give
byte-identical images and json.

    python -m semseg_core.data.synthetic --out datasets/synthetic/test --split test --num-images 200 --seed 1
"""

import argparse
import json
import os
import shutil
import sys
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
from pycocotools import mask as mask_utils
from tqdm import tqdm

from semseg_core.atomic_io import atomic_open
from semseg_core.data.synthetic_shapes import ALL_FAMILIES, FAMILY_CATEGORY_ID, SHAPE_FAMILIES
from semseg_core.data.synthetic_textures import background, object_surface, random_color

# Distinct silhouettes a tiny model can tell apart; the unknowns are object-like but unlike any known one.
DEFAULT_KNOWN_FAMILIES: Tuple[str, ...] = ("box", "disc", "triangle", "ring", "star", "cross")
DEFAULT_UNKNOWN_FAMILIES: Tuple[str, ...] = ("crescent", "l_shape", "arrow", "heart")
DEFAULT_TEST_OPENNESS = 0.5

MIN_VISIBLE_FRACTION = 0.3  # instances more occluded than this are removed from the scene
MIN_VISIBLE_AREA_FRACTION = 0.002  # of the image area (131 px at 256x256): smaller remnants are removed
_SPLIT_CODE = {"train": 0, "test": 1}


@dataclass
class SceneInstance:
    family: str
    known: bool
    mask: np.ndarray  # bool H x W, the visible part


def _check_families(known: Sequence[str], unknown: Sequence[str]) -> None:
    for name in list(known) + list(unknown):
        if name not in SHAPE_FAMILIES:
            raise ValueError(f"unknown shape family {name!r}; available: {', '.join(ALL_FAMILIES)}")
    both = set(known) & set(unknown)
    if both:
        raise ValueError(f"families cannot be both known and unknown: {sorted(both)}")
    if not known and not unknown:
        raise ValueError("no shape families given")


def _rasterize(family: str, rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Full (unoccluded) bool mask of one randomly posed instance of `family`."""
    outer, holes = SHAPE_FAMILIES[family](rng)
    radius = rng.uniform(0.09, 0.2) * min(h, w)
    stretch = np.array([rng.uniform(0.85, 1.15), 1.0], dtype=np.float32)
    theta = rng.uniform(0, 2 * np.pi)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]], dtype=np.float32)
    margin = radius * 0.8  # lets objects touch the border a little, as on a real table
    center = np.array([rng.uniform(margin, w - margin), rng.uniform(margin, h - margin)], dtype=np.float32)

    def to_pixels(poly):  # fixed point with 4 fractional bits for sub-pixel accurate edges
        pts = (poly * stretch) @ rot.T * radius + center
        return np.round(pts * 16).astype(np.int32)

    mask = np.zeros((h, w), dtype=np.uint8)
    cv2.fillPoly(mask, [to_pixels(p) for p in outer], 1, lineType=cv2.LINE_8, shift=4)
    if holes:
        cv2.fillPoly(mask, [to_pixels(p) for p in holes], 0, lineType=cv2.LINE_8, shift=4)
    return mask.astype(bool)


def _visible_masks(full_masks: List[np.ndarray]) -> List[np.ndarray]:
    """Visible part of each mask; later masks are drawn on top of earlier ones."""
    visible = [None] * len(full_masks)
    covered = np.zeros_like(full_masks[0]) if full_masks else None
    for i in range(len(full_masks) - 1, -1, -1):
        visible[i] = full_masks[i] & ~covered
        covered |= full_masks[i]
    return visible


def render_scene(
    rng: np.random.Generator,
    height: int,
    width: int,
    known_families: Sequence[str],
    unknown_families: Sequence[str],
    openness: float,
    min_objects: int = 2,
    max_objects: int = 6,
) -> Tuple[np.ndarray, List[SceneInstance]]:
    """One scene: RGB uint8 image (H x W x 3) and its instances (bottom to top) with visible masks."""
    n = int(rng.integers(min_objects, max_objects + 1))
    # Stochastic rounding keeps the expected unknown share equal to `openness` even for small n.
    n_unknown = int(np.floor(openness * n + rng.random())) if unknown_families else 0
    if not known_families:
        n_unknown = n
    is_known = np.array([False] * n_unknown + [True] * (n - n_unknown))
    rng.shuffle(is_known)
    families = [
        str(rng.choice(known_families)) if k else str(rng.choice(unknown_families)) for k in is_known
    ]
    full = [_rasterize(f, rng, height, width) for f in families]

    # Drop instances that would be mostly hidden; removing one only uncovers the ones below it.
    min_area = MIN_VISIBLE_AREA_FRACTION * height * width
    visible = _visible_masks(full)
    keep = [
        i for i, (f, v) in enumerate(zip(full, visible))
        if f.any() and v.sum() >= max(MIN_VISIBLE_FRACTION * f.sum(), min_area)
    ]
    families = [families[i] for i in keep]
    is_known = is_known[keep]
    full = [full[i] for i in keep]
    visible = _visible_masks(full)

    canvas = background(rng, height, width)
    for mask in full:
        ys, xs = np.nonzero(mask)
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        crop = mask[y0:y1, x0:x1]
        local_bg = canvas[y0:y1, x0:x1][crop].mean(axis=0)
        for _ in range(6):  # enough contrast with what lies below, so the object is actually visible
            color = random_color(rng)
            if np.abs(color - local_bg).sum() > 90:
                break
        surface = object_surface(rng, y1 - y0, x1 - x0, color)
        canvas[y0:y1, x0:x1][crop] = surface[crop]
    canvas += rng.normal(0.0, 2.0, size=canvas.shape).astype(np.float32)  # sensor noise
    image = np.clip(canvas + 0.5, 0, 255).astype(np.uint8)
    instances = [SceneInstance(f, bool(k), v) for f, k, v in zip(families, is_known, visible)]
    return image, instances


def mask_to_annotation(mask: np.ndarray) -> Dict:
    """COCO RLE segmentation, area and bbox (x, y, w, h) of a bool mask; area and bbox are of the mask itself."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    bbox = [float(v) for v in mask_utils.toBbox(rle)]
    rle["counts"] = rle["counts"].decode("ascii")
    return {"segmentation": rle, "area": float(mask.sum()), "bbox": bbox, "iscrowd": 0}


def _image_size(image_size: Union[int, Sequence[int]]) -> Tuple[int, int]:
    h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(int(v) for v in image_size)
    if h < 32 or w < 32:
        raise ValueError(f"image_size must be at least 32x32, got {h}x{w}")
    return h, w


def generate_dataset(
    out_dir: str,
    num_images: int,
    seed: int,
    known_families: Sequence[str] = DEFAULT_KNOWN_FAMILIES,
    unknown_families: Sequence[str] = DEFAULT_UNKNOWN_FAMILIES,
    openness: Optional[float] = None,
    image_size: Union[int, Sequence[int]] = 256,
    split: str = "test",
    min_objects: int = 2,
    max_objects: int = 6,
    progress: bool = True,
) -> str:
    """Write ``out_dir/images/NNNNNN.png`` and ``out_dir/annotations.json``; return the json path.

    ``openness`` is the expected share of unknown objects per image; default 0 for ``train`` (known objects
    only) and 0.5 for ``test``. Categories are all families (stable ids), whether or not they appear.
    """
    known_families, unknown_families = tuple(known_families), tuple(unknown_families)
    openness = _checked_openness(split, known_families, unknown_families, openness)
    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    if not 1 <= min_objects <= max_objects:
        raise ValueError(f"need 1 <= min_objects <= max_objects, got {min_objects}, {max_objects}")
    height, width = _image_size(image_size)

    images, annotations = [], []
    for index in tqdm(range(num_images), desc=f"synthetic {split}", disable=not progress, unit="img"):
        rng = np.random.default_rng([int(seed), _SPLIT_CODE[split], index])
        image, instances = render_scene(
            rng, height, width, known_families, unknown_families, openness, min_objects, max_objects
        )
        image_entry = _write_image(out_dir, index + 1, image)
        images.append(image_entry)
        for inst in instances:
            ann = {"id": len(annotations) + 1, "image_id": image_entry["id"],
                   "category_id": FAMILY_CATEGORY_ID[inst.family]}
            ann.update(mask_to_annotation(inst.mask))
            annotations.append(ann)

    categories = [
        {"id": FAMILY_CATEGORY_ID[name], "name": name, "supercategory": "shape"} for name in ALL_FAMILIES
    ]
    info = {
        "description": "semseg_ros synthetic open-set scenes",
        "split": split,
        "seed": int(seed),
        "openness": openness,
        "num_images": int(num_images),
        "image_size": [height, width],
        "min_objects": int(min_objects),
        "max_objects": int(max_objects),
        "known_families": list(known_families),
        "unknown_families": list(unknown_families),
    }
    json_path = os.path.join(out_dir, "annotations.json")
    with atomic_open(json_path, "w") as f:  # a crashed run never leaves a half-written json behind
        json.dump({"info": info, "images": images, "annotations": annotations, "categories": categories}, f)
    return json_path


def _checked_openness(split: str, known_families: Tuple[str, ...], unknown_families: Tuple[str, ...],
                      openness: Optional[float]) -> float:
    """The share of unknown objects (the split's default when None), checked against the families."""
    if split not in _SPLIT_CODE:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    _check_families(known_families, unknown_families)
    if openness is None:
        openness = 0.0 if split == "train" else DEFAULT_TEST_OPENNESS
    if not 0.0 <= float(openness) <= 1.0:
        raise ValueError(f"openness must be in [0, 1], got {openness}")
    if openness > 0 and not unknown_families:
        raise ValueError("openness > 0 needs at least one unknown family")
    if openness < 1 and not known_families:
        raise ValueError("openness < 1 needs at least one known family")
    return float(openness)


def _write_image(out_dir: str, image_id: int, image: np.ndarray) -> Dict:
    """Write an RGB scene as ``out_dir/images/NNNNNN.png``; return its COCO image entry."""
    image_dir = os.path.join(out_dir, "images")
    os.makedirs(image_dir, exist_ok=True)
    height, width = image.shape[:2]
    file_name = f"{image_id:06d}.png"
    if not cv2.imwrite(os.path.join(image_dir, file_name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write image {os.path.join(image_dir, file_name)}")
    return {"id": image_id, "file_name": file_name, "height": height, "width": width}


def _synthetic_request(cfg, split: str) -> Dict:
    syn = cfg.DATASETS.SYNTHETIC
    train = split == "train"
    return {
        "split": split,
        "seed": int(syn.TRAIN_SEED if train else syn.TEST_SEED),
        "openness": 0.0 if train else float(syn.TEST_OPENNESS),
        "num_images": int(syn.TRAIN_IMAGES if train else syn.TEST_IMAGES),
        "image_size": [int(syn.IMAGE_SIZE), int(syn.IMAGE_SIZE)],
        "known_families": list(syn.KNOWN_FAMILIES),
        "unknown_families": list(syn.UNKNOWN_FAMILIES),
    }


def _existing_info(json_path: str) -> Optional[Dict]:
    try:
        with open(json_path, "r") as f:
            return json.load(f).get("info", {})
    except (OSError, ValueError, AttributeError):
        return None


def ensure_synthetic_dataset(cfg, names: Sequence[str] = ("synthetic_train", "synthetic_test"),
                             progress: bool = True) -> List[str]:
    """Generate ``DATASETS.ROOT/synthetic/{train,test}`` as ``DATASETS.SYNTHETIC.*`` asks, unless already there.

    A folder made with other parameters is regenerated. Generation goes to a temporary folder that is renamed
    into place, so concurrent callers (e.g. several DDP ranks) never see a half-written dataset.
    Returns the annotation json paths.
    """
    paths = []
    for name in names:
        if not name.startswith("synthetic_") or name[len("synthetic_"):] not in _SPLIT_CODE:
            raise ValueError(f"not a synthetic dataset name: {name!r} (synthetic_train or synthetic_test)")
        split = name[len("synthetic_"):]
        out_dir = os.path.join(cfg.DATASETS.ROOT, "synthetic", split)
        json_path = os.path.join(out_dir, "annotations.json")
        want = _synthetic_request(cfg, split)
        info = _existing_info(json_path) if os.path.isfile(json_path) else None
        if info is not None and all(info.get(k) == v for k, v in want.items()):
            paths.append(json_path)
            continue
        tmp_dir = f"{out_dir}.tmp-{os.getpid()}"
        shutil.rmtree(tmp_dir, ignore_errors=True)
        generate_dataset(tmp_dir, want["num_images"], want["seed"], want["known_families"],
                         want["unknown_families"], want["openness"], want["image_size"], split, progress=progress)
        if _existing_info(json_path) != _existing_info(os.path.join(tmp_dir, "annotations.json")):
            shutil.rmtree(out_dir, ignore_errors=True)  # stale parameters (or another process is just done)
        try:
            os.replace(tmp_dir, out_dir)
        except OSError:  # another process renamed an identical dataset into place first
            shutil.rmtree(tmp_dir, ignore_errors=True)
        paths.append(json_path)
    return paths


def _family_list(text: str) -> Tuple[str, ...]:
    return tuple(s.strip() for s in text.split(",") if s.strip())


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m semseg_core.data.synthetic",
        description="Generate synthetic open-set tabletop scenes (PNG images + COCO json with exact masks).",
    )
    parser.add_argument("--out", required=True, help="output folder (gets images/ and annotations.json)")
    parser.add_argument("--split", choices=("train", "test"), default="test")
    parser.add_argument("--num-images", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--openness", type=float, default=None,
                        help="expected share of unknown objects per image (default: 0 train, 0.5 test)")
    parser.add_argument("--image-size", type=int, default=256, help="square image side in pixels")
    parser.add_argument("--known", type=_family_list, default=DEFAULT_KNOWN_FAMILIES,
                        help=f"comma-separated known families (default {','.join(DEFAULT_KNOWN_FAMILIES)})")
    parser.add_argument("--unknown", type=_family_list, default=DEFAULT_UNKNOWN_FAMILIES,
                        help=f"comma-separated unknown families (default {','.join(DEFAULT_UNKNOWN_FAMILIES)}); "
                        f"all families: {','.join(ALL_FAMILIES)}")
    parser.add_argument("--min-objects", type=int, default=2)
    parser.add_argument("--max-objects", type=int, default=6)
    args = parser.parse_args(argv)
    try:
        path = generate_dataset(
            args.out, args.num_images, args.seed, args.known, args.unknown, args.openness,
            args.image_size, args.split, args.min_objects, args.max_objects,
        )
    except ValueError as err:
        parser.error(str(err))
    print(f"wrote {args.num_images} images and {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
