"""Model outputs / Predictor results / ROS messages -> COCO result dicts.

One conversion path for offline evaluation and for scoring recorded ROS output: boxes xyxy -> xywh, masks
-> compressed RLE (str counts, JSON-ready), contiguous known-class index -> dataset category id (row k of
the model = k-th id of the sorted ``known_category_ids``), unknown -> UNKNOWN_ID.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from pycocotools import mask as mask_utils

from .coco_io import UNKNOWN_ID


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor, without importing torch here
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def masks_to_rle(masks: Any) -> list[dict]:
    """N x H x W boolean masks -> N compressed RLEs with str counts (pycocotools encoding)."""
    masks = _to_numpy(masks)
    if masks.ndim != 3:
        raise ValueError(f"masks must be N x H x W, got shape {masks.shape}")
    if masks.shape[0] == 0:
        return []
    rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    return [{"size": [int(s) for s in r["size"]], "counts": r["counts"].decode("ascii")} for r in rles]


def class_index_to_category_id(class_index: int, known_category_ids: Sequence[int]) -> int:
    """Contiguous known index 0..K-1 -> dataset category id; UNKNOWN_ID stays UNKNOWN_ID."""
    class_index = int(class_index)
    if class_index == UNKNOWN_ID:
        return UNKNOWN_ID
    if not 0 <= class_index < len(known_category_ids):
        raise ValueError(f"class index {class_index} is neither a known class index 0..{len(known_category_ids) - 1} "
                         f"nor UNKNOWN_ID={UNKNOWN_ID}")
    return int(sorted(known_category_ids)[class_index])


def instances_to_coco(image_id: int, boxes: Any, scores: Any, class_ids: Any, known_category_ids: Sequence[int],
                      masks: Any = None, box_format: str = "xyxy") -> list[dict]:
    """Arrays of one image -> COCO result dicts. ``class_ids``: 0..K-1 known index or UNKNOWN_ID."""
    boxes = _to_numpy(boxes).astype(np.float64).reshape(-1, 4)
    scores = _to_numpy(scores).astype(np.float64).reshape(-1)
    class_ids = _to_numpy(class_ids).astype(np.int64).reshape(-1)
    n = len(boxes)
    if len(scores) != n or len(class_ids) != n:
        raise ValueError(f"image {image_id}: {n} boxes but {len(scores)} scores and {len(class_ids)} class ids")
    xywh = boxes_to_xywh(boxes, box_format)
    rles = None
    if masks is not None:
        rles = masks_to_rle(masks)
        if len(rles) != n:
            raise ValueError(f"image {image_id}: {n} boxes but {len(rles)} masks")
    known_sorted = sorted(int(c) for c in known_category_ids)
    results = []
    for i in range(n):
        det = {"image_id": int(image_id), "category_id": class_index_to_category_id(class_ids[i], known_sorted),
               "bbox": [float(v) for v in xywh[i]], "score": float(scores[i])}
        if rles is not None:
            det["segmentation"] = rles[i]
        results.append(det)
    return results


def boxes_to_xywh(boxes: np.ndarray, box_format: str) -> np.ndarray:
    """xyxy (model, Predictor) or cxcywh (vision_msgs BoundingBox2D) -> COCO xywh."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if box_format == "xyxy":
        return np.stack([boxes[:, 0], boxes[:, 1], boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], axis=1)
    if box_format == "cxcywh":
        return np.stack([boxes[:, 0] - boxes[:, 2] / 2, boxes[:, 1] - boxes[:, 3] / 2, boxes[:, 2], boxes[:, 3]], axis=1)
    if box_format == "xywh":
        return boxes.copy()
    raise ValueError(f"box_format must be 'xyxy', 'cxcywh' or 'xywh', got {box_format!r}")


def results_to_coco(image_id: int, prediction: Any, known_category_ids: Sequence[int],
                    with_masks: bool = True) -> list[dict]:
    """A Predictor ``Result`` or a model output dict (with pasted ``masks``) -> COCO result dicts.

    ``Result``: attributes boxes (xyxy), scores, class_ids, masks. Model output dict: keys "boxes", "scores",
    "classes" and optionally "masks" (N x H x W, already pasted with postprocess.paste_masks).
    """
    if isinstance(prediction, dict):
        boxes, scores = prediction["boxes"], prediction["scores"]
        class_ids = prediction["classes"] if "classes" in prediction else prediction["class_ids"]
        masks = prediction.get("masks")
    else:
        boxes, scores, class_ids = prediction.boxes, prediction.scores, prediction.class_ids
        masks = getattr(prediction, "masks", None)
    return instances_to_coco(image_id, boxes, scores, class_ids, known_category_ids,
                             masks=masks if with_masks else None)


def _resolve_class(value: Any, class_names: Sequence[str] | None) -> int:
    """ROS hypothesis class ids are strings: a class name, "unknown", or a number (index or UNKNOWN_ID)."""
    if isinstance(value, (int, np.integer)):
        return int(value)
    text = str(value).strip()
    if text.lower() == "unknown":
        return UNKNOWN_ID
    if class_names is not None and text in class_names:
        return list(class_names).index(text)
    if text.lstrip("-").isdigit():
        return int(text)
    raise ValueError(f"class {value!r} is not a known class name, 'unknown', or a class index")


def results_from_label_image(label_image: Any, boxes: Any, scores: Any, classes: Sequence[Any], image_id: int,
                             known_category_ids: Sequence[int], class_names: Sequence[str] | None = None,
                             instance_ids: Sequence[int] | None = None, box_format: str = "xyxy") -> list[dict]:
    """Rebuild COCO results from a mono16 label image + per-detection data (e.g. a Detection2DArray).

    ``instance_ids[i]`` is detection i's value in the label image (default i+1, the Predictor's order);
    ``classes[i]`` a known index, UNKNOWN_ID, a class name from ``class_names`` or "unknown".
    """
    label = _to_numpy(label_image)
    if label.ndim != 2:
        raise ValueError(f"label image must be H x W, got shape {label.shape}")
    n = len(classes)
    ids = np.arange(1, n + 1) if instance_ids is None else np.asarray([int(i) for i in instance_ids])
    if len(ids) != n:
        raise ValueError(f"{n} detections but {len(ids)} instance ids")
    if np.any(ids <= 0):
        raise ValueError("instance ids must be >= 1 (0 is the background of the label image)")
    masks = label[None, :, :] == ids[:, None, None]
    class_ids = np.array([_resolve_class(c, class_names) for c in classes], dtype=np.int64)
    return instances_to_coco(image_id, boxes_to_xywh(_to_numpy(boxes), box_format), scores, class_ids,
                             known_category_ids, masks=masks, box_format="xywh")
