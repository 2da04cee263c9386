"""Hand-built COCO ground truth and detections for the evaluator tests (axis-aligned rectangles)."""
from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils

from semseg_core.constants import UNKNOWN_ID

H = W = 100
CATEGORIES = [{"id": 1, "name": "apple"}, {"id": 3, "name": "bowl"}, {"id": 7, "name": "cup"},
              {"id": 9, "name": "drill"}]
KNOWN = [1, 3]  # 7 and 9 are evaluated as unknown


def rect_polygon(x, y, w, h):
    return [[x, y, x + w, y, x + w, y + h, x, y + h]]


def make_gt(objects, num_images=1, categories=CATEGORIES):
    """objects: (image_id, category_id, x, y, w, h[, iscrowd]) tuples -> COCO GT dict."""
    anns = []
    for i, obj in enumerate(objects, start=1):
        img, cat, x, y, w, h = obj[:6]
        crowd = obj[6] if len(obj) > 6 else 0
        anns.append({"id": i, "image_id": img, "category_id": cat, "bbox": [x, y, w, h],
                     "segmentation": rect_polygon(x, y, w, h), "area": float(w * h), "iscrowd": crowd})
    images = [{"id": i, "height": H, "width": W, "file_name": f"{i:06d}.png"} for i in range(1, num_images + 1)]
    return {"images": images, "annotations": anns, "categories": [dict(c) for c in categories]}


def rect_rle(x, y, w, h):
    m = np.zeros((H, W, 1), np.uint8)
    m[y:y + h, x:x + w] = 1
    rle = mask_utils.encode(np.asfortranarray(m))[0]
    return {"size": [H, W], "counts": rle["counts"].decode("ascii")}


def det(image_id, category_id, x, y, w, h, score):
    """A detection with both box and mask (the same rectangle)."""
    return {"image_id": image_id, "category_id": category_id, "bbox": [x, y, w, h], "score": score,
            "segmentation": rect_rle(x, y, w, h)}


def perfect_detections(gt):
    """Every non-crowd GT predicted exactly; non-known GT predicted as UNKNOWN_ID."""
    out = []
    for a in gt["annotations"]:
        if a.get("iscrowd"):
            continue
        cat = a["category_id"] if a["category_id"] in KNOWN else UNKNOWN_ID
        out.append(det(a["image_id"], cat, *[int(v) for v in a["bbox"]], score=0.9))
    return out
