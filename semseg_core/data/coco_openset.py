"""Reading COCO-format instance annotations for open-set training and testing.

One reader serves COCO, GraspNet-OS, the synthetic scenes and users' own datasets. Bad files fail with an error
that names the file and the problem; degenerate annotations are skipped and counted, as COCO practice does.
"""

import json
import os
from collections import Counter
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np


class DatasetError(ValueError):
    """An annotation file or dataset definition that cannot be used (message names the file and the problem)."""


def read_coco_json(json_file: str) -> Dict:
    """Parse a COCO json; a missing, corrupt or truncated file raises an error naming it and the JSON problem."""
    if not os.path.isfile(json_file):
        raise FileNotFoundError(f"annotation file not found: {json_file}")
    try:
        with open(json_file, "r", encoding="utf-8") as f:
            doc = json.load(f)
    except json.JSONDecodeError as err:
        raise DatasetError(
            f"{json_file}: invalid JSON at line {err.lineno}, column {err.colno}: {err.msg} "
            "(corrupt or truncated annotation file?)"
        ) from None
    except UnicodeDecodeError as err:
        raise DatasetError(f"{json_file}: not UTF-8 text ({err})") from None
    if not isinstance(doc, dict):
        raise DatasetError(f"{json_file}: expected a JSON object with 'images' and 'categories', got {type(doc).__name__}")
    for key in ("images", "categories"):
        if not isinstance(doc.get(key), list):
            raise DatasetError(f"{json_file}: missing or malformed '{key}' list (not a COCO instances file?)")
    if not isinstance(doc.get("annotations", []), list):
        raise DatasetError(f"{json_file}: 'annotations' must be a list")
    return doc


def parse_categories(doc: Dict, json_file: str) -> List[Dict]:
    """The file's categories as ``[{"id", "name", ...}]`` sorted by id; duplicate ids or names are errors."""
    cats = []
    for i, cat in enumerate(doc["categories"]):
        if not isinstance(cat, dict) or "id" not in cat or "name" not in cat:
            raise DatasetError(f"{json_file}: categories[{i}] needs an 'id' and a 'name', got {cat!r}")
        cats.append(dict(cat))
    for field in ("id", "name"):
        dup = [v for v, n in Counter(c[field] for c in cats).items() if n > 1]
        if dup:
            raise DatasetError(f"{json_file}: duplicate category {field}(s) {dup}")
    return sorted(cats, key=lambda c: c["id"])


def resolve_known_categories(
    categories: Sequence[Dict],
    json_file: str,
    known_class_names: Optional[Sequence[str]] = None,
    known_category_ids: Optional[Sequence[int]] = None,
) -> Tuple[List[int], List[str]]:
    """Known category ids (ascending) and their names in the same order = the model's row order.

    Exactly one of names / ids is used; names must match the file's category names exactly.
    """
    by_name = {c["name"]: c["id"] for c in categories}
    by_id = {c["id"]: c["name"] for c in categories}
    if known_class_names is not None:
        missing = [n for n in known_class_names if n not in by_name]
        if missing:
            raise DatasetError(
                f"{json_file}: known class name(s) {missing} not among its categories; "
                f"available: {', '.join(repr(c['name']) for c in categories)}"
            )
        ids = sorted({by_name[n] for n in known_class_names})
    elif known_category_ids is not None:
        missing = [i for i in known_category_ids if i not in by_id]
        if missing:
            raise DatasetError(f"{json_file}: known category id(s) {missing} not among its categories {sorted(by_id)}")
        ids = sorted(set(int(i) for i in known_category_ids))
    else:
        raise DatasetError(f"{json_file}: no known classes given")
    if not ids:
        raise DatasetError(f"{json_file}: the list of known classes is empty")
    return ids, [by_id[i] for i in ids]


def _polygon_area(flat: Sequence[float]) -> float:
    xy = np.asarray(flat, dtype=np.float64).reshape(-1, 2)
    x, y = xy[:, 0], xy[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _clean_segmentation(seg, ann_id, json_file: str):
    """Valid polygons (>= 3 points, non-zero area) or the RLE dict; None when nothing usable is left."""
    if isinstance(seg, dict):
        if "counts" not in seg or "size" not in seg:
            raise DatasetError(f"{json_file}: annotation {ann_id}: RLE segmentation needs 'counts' and 'size'")
        return seg
    if isinstance(seg, list):
        polys = []
        for poly in seg:
            if not isinstance(poly, list) or len(poly) % 2:
                raise DatasetError(f"{json_file}: annotation {ann_id}: a polygon must be a flat list [x1, y1, x2, y2, ...]")
            if len(poly) >= 6 and _polygon_area(poly) > 0:
                polys.append([float(v) for v in poly])
        return polys or None
    raise DatasetError(f"{json_file}: annotation {ann_id}: segmentation must be a polygon list or an RLE dict")


def load_coco_records(doc: Dict, json_file: str, image_root: str, need_masks: bool = True) -> Tuple[List[Dict], Counter]:
    """One record per image (detectron2-style dicts) with every valid annotation, crowd included.

    Record: file_name (joined with image_root), image_id, height, width, annotations = [{id, bbox (xywh),
    category_id, iscrowd, segmentation}]. Returns (records, counts of what was skipped and why).
    """
    stats: Counter = Counter()
    cat_ids = {c["id"] for c in parse_categories(doc, json_file)}
    records, by_image = [], {}
    for i, img in enumerate(doc["images"]):
        if not isinstance(img, dict) or "id" not in img or "file_name" not in img:
            raise DatasetError(f"{json_file}: images[{i}] needs an 'id' and a 'file_name'")
        if img["id"] in by_image:
            raise DatasetError(f"{json_file}: duplicate image id {img['id']}")
        rec = {
            "file_name": os.path.join(image_root, img["file_name"]),
            "image_id": img["id"],
            "height": img.get("height"),
            "width": img.get("width"),
            "annotations": [],
        }
        by_image[img["id"]] = rec
        records.append(rec)
    for i, ann in enumerate(doc.get("annotations", [])):
        ann_id = ann.get("id", f"#{i}") if isinstance(ann, dict) else f"#{i}"
        if not isinstance(ann, dict) or "image_id" not in ann or "category_id" not in ann:
            raise DatasetError(f"{json_file}: annotation {ann_id} needs 'image_id' and 'category_id'")
        if ann["category_id"] not in cat_ids:
            raise DatasetError(
                f"{json_file}: annotation {ann_id} has category_id {ann['category_id']}, "
                f"which is not in the file's categories {sorted(cat_ids)}"
            )
        rec = by_image.get(ann["image_id"])
        if rec is None:
            raise DatasetError(f"{json_file}: annotation {ann_id} refers to image_id {ann['image_id']}, not in 'images'")
        bbox = ann.get("bbox")
        if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4):
            raise DatasetError(f"{json_file}: annotation {ann_id}: 'bbox' must be [x, y, width, height], got {bbox!r}")
        if not (bbox[2] > 0 and bbox[3] > 0):
            stats["zero-area box"] += 1
            continue
        seg = ann.get("segmentation")  # kept as is when masks are not used (test records)
        if need_masks:
            if "segmentation" not in ann:
                raise DatasetError(f"{json_file}: annotation {ann_id} has no 'segmentation' (masks are required)")
            seg = _clean_segmentation(ann["segmentation"], ann_id, json_file)
            if seg is None:
                stats["zero-area polygon"] += 1
                continue
        rec["annotations"].append({
            "id": ann.get("id"),
            "bbox": [float(v) for v in bbox],
            "category_id": ann["category_id"],
            "iscrowd": int(ann.get("iscrowd", 0)),
            "segmentation": seg,
        })
    return records, stats


def filter_for_training(records: List[Dict], known_category_ids: Sequence[int], filter_empty: bool,
                        stats: Counter) -> List[Dict]:
    """Keep only non-crowd known-class annotations; drop images left empty when `filter_empty`."""
    known = set(known_category_ids)
    out = []
    for rec in records:
        kept = []
        for ann in rec["annotations"]:
            if ann["iscrowd"]:
                stats["crowd"] += 1
            elif ann["category_id"] not in known:
                stats["not a known class"] += 1
            else:
                kept.append(ann)
        if not kept and filter_empty:
            stats["images without known instances"] += 1
            continue
        out.append(dict(rec, annotations=kept))
    return out
