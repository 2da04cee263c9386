"""Reading, checking and writing COCO-format ground truth and result files.

Every check raises an error that names the file (or "<dict>" for in-memory data), the offending entry and
the problem, so that a broken annotation or result file is easy to fix.  Loaded data is always copied:
the caller's dicts are never modified.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any, Iterable, Sequence

import numpy as np
from pycocotools import mask as mask_utils

from semseg_core.atomic_io import atomic_open
from semseg_core.constants import UNKNOWN_ID


class CocoFormatError(ValueError):
    """A ground-truth or result file that is not valid COCO format (the message names file and entry)."""


def read_json(path: str, what: str) -> Any:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} file not found: {path}")
    try:
        with open(path, "r", encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CocoFormatError(f"{what} file {path} is not valid JSON (corrupt or truncated?): {e}") from e


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool) and math.isfinite(x)


def load_coco_gt(gt: str | os.PathLike | dict) -> tuple[dict, str]:
    """Load and check a COCO ground-truth dataset; return (checked copy, source name).

    The copy has fresh annotation dicts (shallow copies) with ``area`` and ``iscrowd`` filled in and
    annotation ids made positive and unique (COCOeval uses id 0 as "no match").
    """
    data, source = _read_gt(gt)
    images = _checked_images(data["images"], source)
    categories = _checked_categories(data["categories"], source)
    annotations = _checked_annotations(data["annotations"], images, categories, source)
    checked = {k: v for k, v in data.items() if k not in ("images", "annotations", "categories")}
    checked["images"] = [dict(img) for img in data["images"]]
    checked["categories"] = [dict(cat) for cat in data["categories"]]
    checked["annotations"] = annotations
    return checked, source


def _read_gt(gt: str | os.PathLike | dict) -> tuple[dict, str]:
    """The ground-truth dict and its source name, with the three top-level lists present."""
    if isinstance(gt, dict):
        source, data = "<GT dict>", gt
    else:
        source = os.fspath(gt)
        data = read_json(source, "Ground-truth annotation")
    if not isinstance(data, dict):
        raise CocoFormatError(f"{source}: top level must be a JSON object with images/annotations/categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise CocoFormatError(f"{source}: missing or non-list field '{key}'")
    return data, source


def _checked_images(entries: list, source: str) -> dict:
    """Image id -> image; every image has a unique integer id and a positive height and width."""
    images = {}
    for i, img in enumerate(entries):
        if not isinstance(img, dict) or not isinstance(img.get("id"), (int, np.integer)):
            raise CocoFormatError(f"{source}: images[{i}] has no integer 'id'")
        for key in ("height", "width"):
            if not _is_number(img.get(key)) or img[key] <= 0:
                raise CocoFormatError(f"{source}: image id {img['id']} has no positive '{key}'")
        if img["id"] in images:
            raise CocoFormatError(f"{source}: duplicate image id {img['id']}")
        images[img["id"]] = img
    if not images:
        raise CocoFormatError(f"{source}: the file has no images")
    return images


def _checked_categories(entries: list, source: str) -> dict:
    """Category id -> category; every category has a unique integer id."""
    categories = {}
    for i, cat in enumerate(entries):
        if not isinstance(cat, dict) or not isinstance(cat.get("id"), (int, np.integer)):
            raise CocoFormatError(f"{source}: categories[{i}] has no integer 'id'")
        if cat["id"] in categories:
            raise CocoFormatError(f"{source}: duplicate category id {cat['id']}")
        categories[cat["id"]] = cat
    return categories


def _checked_annotations(entries: list, images: dict, categories: dict, source: str) -> list[dict]:
    """Copies of the annotations, each pointing at a known image and category with a valid box, with
    ``iscrowd`` and ``area`` filled in; all ids renumbered 1..N when any is missing, not positive or repeated."""
    annotations = []
    seen_ids = set()
    need_new_ids = False
    for i, ann in enumerate(entries):
        where = f"{source}: annotations[{i}] (id {ann.get('id') if isinstance(ann, dict) else '?'})"
        if not isinstance(ann, dict):
            raise CocoFormatError(f"{where} is not an object")
        if ann.get("image_id") not in images:
            raise CocoFormatError(f"{where}: image_id {ann.get('image_id')!r} is not in the file's images")
        if ann.get("category_id") not in categories:
            raise CocoFormatError(f"{where}: category_id {ann.get('category_id')!r} is not in the file's categories")
        bbox = ann.get("bbox")
        if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
            raise CocoFormatError(f"{where}: 'bbox' must be 4 finite numbers [x, y, w, h], got {bbox!r}")
        if bbox[2] < 0 or bbox[3] < 0:
            raise CocoFormatError(f"{where}: 'bbox' has negative width/height {bbox!r}")
        new = dict(ann)
        new["iscrowd"] = int(ann.get("iscrowd", 0) or 0)
        if "area" not in ann or not _is_number(ann["area"]):
            new["area"] = _annotation_area(new, images[ann["image_id"]], where)
        if not isinstance(ann.get("id"), (int, np.integer)) or ann["id"] <= 0 or ann["id"] in seen_ids:
            need_new_ids = True
        seen_ids.add(ann.get("id"))
        annotations.append(new)
    if need_new_ids:
        for n, ann in enumerate(annotations, start=1):
            ann["id"] = n
    return annotations


def _annotation_area(ann: dict, img: dict, where: str) -> float:
    """COCO practice: the area is the mask area when there is a segmentation, else the box area."""
    segm = ann.get("segmentation")
    if segm:
        try:
            return float(mask_utils.area(segmentation_to_rle(segm, img["height"], img["width"])))
        except Exception as e:  # malformed polygon / RLE
            raise CocoFormatError(f"{where}: unreadable 'segmentation': {e}") from e
    return float(ann["bbox"][2] * ann["bbox"][3])


def segmentation_to_rle(segm: Any, height: int, width: int) -> dict:
    """Polygon list, uncompressed RLE or compressed RLE -> one compressed RLE (counts may be bytes)."""
    h, w = int(height), int(width)
    if isinstance(segm, list):
        polys = [p for p in segm if len(p) >= 6]  # zero-area fragments (< 3 points) are skipped as COCO does
        if not polys:
            raise ValueError("polygon list has no polygon with at least 3 points")
        return mask_utils.merge(mask_utils.frPyObjects(polys, h, w))
    if isinstance(segm, dict) and "counts" in segm and "size" in segm:
        if list(segm["size"]) != [h, w]:
            raise ValueError(f"RLE size {list(segm['size'])} does not match the image size [{h}, {w}]")
        if isinstance(segm["counts"], list):
            return mask_utils.frPyObjects(segm, h, w)
        return segm
    raise ValueError(f"unsupported segmentation of type {type(segm).__name__}")


def check_results(results: Iterable[dict], images: dict, allowed_category_ids: set, source: str,
                  iou_types: Sequence[str]) -> list[dict]:
    """Check COCO result dicts against the GT images; return normalised copies.

    Each copy has image_id, category_id, score, and ``bbox`` (derived from the mask when absent) and, for
    segm, a compressed RLE ``segmentation`` with str counts.
    """
    if not isinstance(results, (list, tuple)):
        raise CocoFormatError(f"{source}: results must be a list of detection objects, got {type(results).__name__}")
    need_segm = "segm" in iou_types
    out = []
    for i, det in enumerate(results):
        where = f"{source}: result #{i}"
        if not isinstance(det, dict):
            raise CocoFormatError(f"{where} is not an object")
        img = images.get(det.get("image_id"))
        if img is None:
            raise CocoFormatError(f"{where}: image_id {det.get('image_id')!r} is not an image of the GT file")
        cat = det.get("category_id")
        if cat not in allowed_category_ids:
            raise CocoFormatError(f"{where}: category_id {cat!r} is neither a known category id "
                                  f"nor UNKNOWN_ID={UNKNOWN_ID}")
        if not _is_number(det.get("score")):
            raise CocoFormatError(f"{where}: 'score' must be a finite number, got {det.get('score')!r}")
        new = {"image_id": det["image_id"], "category_id": int(cat), "score": float(det["score"])}
        rle = None
        if det.get("segmentation") is not None:
            try:
                rle = segmentation_to_rle(det["segmentation"], img["height"], img["width"])
            except Exception as e:
                raise CocoFormatError(f"{where}: bad 'segmentation': {e}") from e
            counts = rle["counts"]
            new["segmentation"] = {"size": list(rle["size"]),
                                   "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts}
        elif need_segm:
            raise CocoFormatError(f"{where}: no 'segmentation' but segm evaluation was requested")
        bbox = det.get("bbox")
        if bbox is None and rle is not None:
            bbox = mask_utils.toBbox(rle).tolist()
        if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
            raise CocoFormatError(f"{where}: 'bbox' must be 4 finite numbers [x, y, w, h], got {bbox!r}")
        new["bbox"] = [float(v) for v in bbox]
        out.append(new)
    return out


def load_results_json(path: str | os.PathLike) -> list[dict]:
    """Read a COCO result file (a JSON list of detections)."""
    data = read_json(path, "Result")
    if not isinstance(data, list):
        raise CocoFormatError(f"{os.fspath(path)}: a COCO result file must be a JSON list of detections")
    return data


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k) if not isinstance(k, str) else k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, bytes):
        return obj.decode("ascii")
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None  # strict JSON has no NaN
    return obj


def write_json_atomic(obj: Any, path: str | os.PathLike, indent: int | None = None) -> str:
    """Write JSON via a temp file in the same folder + os.replace (no half-written file on a crash)."""
    path = os.fspath(path)
    with atomic_open(path, "w", encoding="utf-8") as f:
        json.dump(_jsonable(obj), f, indent=indent, allow_nan=False)
    return path


def save_results_json(results: list[dict], path: str | os.PathLike) -> str:
    """Write COCO result dicts (RLE counts as str) so pycocotools and other tools can read them."""
    return write_json_atomic(list(results), path)
