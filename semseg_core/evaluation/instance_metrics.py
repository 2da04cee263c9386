"""Per-object metrics of an instance label image, as robots use it (unseen-object instance segmentation).

Two families, both from one predicted label image (0 background, value = instance id) against the ground truth:

- **Overlap and Boundary P/R/F** as UOIS-Net, UCN and UOAIS report them on OCID / OSD: predicted and ground-truth
  instances are matched one-to-one (Hungarian, maximising the mask F-measure of a pair); Overlap precision =
  matched intersection pixels / predicted foreground pixels, recall = the same / ground-truth foreground pixels;
  Boundary P/R count boundary pixels of a matched pair that lie within a tolerance (``BOUNDARY_TOLERANCE`` of the
  image diagonal, rounded up: 2 px at 256 x 256) of the other's boundary; F = 2PR / (P + R). Each figure is the
  mean over images; ``objects_F075`` is the share of ground-truth objects whose matched pair has F >= 0.75.
- **The open-set per-object table**: each ground-truth object's best-overlapping instance (highest mask IoU);
  a known object counts as found with its class when that instance has IoU >= 0.5 and the object's class, an
  unknown object as found as unknown when the instance has IoU >= 0.5 and is unknown; "labelled known" /
  "labelled unknown" look at the label of the best-overlapping instance whatever its IoU. Also detections per
  object and listed detections that own no pixel of the label image.

The class of an instance is a known-class index (0..K-1) or ``UNKNOWN_ID``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Sequence

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from .coco_io import UNKNOWN_ID, segmentation_to_rle

BOUNDARY_TOLERANCE = 0.003  # share of the image diagonal (the DAVIS / UOIS-Net boundary measure)
OBJECT_F_THRESHOLD = 0.75
FOUND_IOU = 0.5


# ---- one-to-one matching -----------------------------------------------------------------------------------
def hungarian(cost: np.ndarray) -> tuple:
    """Minimum-cost one-to-one assignment of a rows x cols cost matrix (the shorter side is fully assigned).

    Returns (row indices, column indices), sorted by row. The Kuhn-Munkres algorithm with potentials, O(n^2 m)."""
    cost = np.asarray(cost, np.float64)
    if cost.ndim != 2:
        raise ValueError(f"cost must be a 2-D matrix, got shape {cost.shape}")
    transposed = cost.shape[0] > cost.shape[1]
    if transposed:
        cost = cost.T
    n, m = cost.shape
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    u, v = np.zeros(n + 1), np.zeros(m + 1)
    match = np.zeros(m + 1, np.int64)  # match[j] = row (1-based) assigned to column j; 0 = free
    way = np.zeros(m + 1, np.int64)
    for i in range(1, n + 1):
        match[0] = i
        j0 = 0
        minv = np.full(m + 1, np.inf)
        used = np.zeros(m + 1, bool)
        while True:
            used[j0] = True
            i0 = match[j0]
            reduced = cost[i0 - 1] - u[i0] - v[1:]
            free = ~used[1:]
            better = free & (reduced < minv[1:])
            minv[1:][better] = reduced[better]
            way[1:][better] = j0
            candidates = np.where(free, minv[1:], np.inf)
            j1 = int(np.argmin(candidates)) + 1
            delta = candidates[j1 - 1]
            u[match[used]] += delta
            v[used] -= delta
            minv[1:][free] -= delta
            j0 = j1
            if match[j0] == 0:
                break
        while j0:
            j1 = way[j0]
            match[j0] = match[j1]
            j0 = j1
    cols = np.nonzero(match[1:])[0]
    rows = match[1:][cols] - 1
    if transposed:
        rows, cols = cols, rows
    order = np.argsort(rows)
    return rows[order].astype(np.int64), cols[order].astype(np.int64)


# ---- label images --------------------------------------------------------------------------------------------
def boundary_map(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` with a 4-neighbour outside it (outside the image counts as outside)."""
    mask = np.asarray(mask, bool)
    padded = np.pad(mask, 1, constant_values=False)
    interior = (padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:])
    return mask & ~interior


def boundary_radius(shape: Sequence[int], tolerance: float = BOUNDARY_TOLERANCE) -> int:
    """Tolerance in pixels: ``tolerance`` x the image diagonal, rounded up (>= 1 means pixels already)."""
    if tolerance >= 1:
        return int(tolerance)
    return int(math.ceil(tolerance * math.hypot(shape[0], shape[1])))


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    if radius <= 0:
        return mask
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)


def _ids(label: np.ndarray) -> np.ndarray:
    ids = np.unique(label)
    return ids[ids != 0]


def _pair_counts(pred: np.ndarray, gt: np.ndarray, pred_ids: np.ndarray, gt_ids: np.ndarray) -> np.ndarray:
    """gt x pred intersection pixel counts (label images, ids as given)."""
    p_index = np.searchsorted(pred_ids, pred) if len(pred_ids) else np.zeros_like(pred, np.int64)
    g_index = np.searchsorted(gt_ids, gt) if len(gt_ids) else np.zeros_like(gt, np.int64)
    both = (pred != 0) & (gt != 0)
    joint = g_index[both] * max(1, len(pred_ids)) + p_index[both]
    return np.bincount(joint, minlength=len(gt_ids) * len(pred_ids)).reshape(len(gt_ids), len(pred_ids))


@dataclass
class ImageOverlap:
    """Overlap and Boundary P/R/F of one image, and its matched-object count."""
    overlap_p: float
    overlap_r: float
    overlap_f: float
    boundary_p: float
    boundary_r: float
    boundary_f: float
    objects: int
    objects_f075: int


def _f(p: float, r: float) -> float:
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def overlap_boundary_metrics(pred: np.ndarray, gt: np.ndarray, tolerance: float = BOUNDARY_TOLERANCE) -> ImageOverlap:
    """UOIS-style Overlap / Boundary P/R/F of one predicted label image against a ground-truth label image.

    An image without predicted pixels has precision 1 (nothing wrong said) and one without ground-truth pixels
    recall 1 (nothing to find)."""
    pred, gt = np.asarray(pred), np.asarray(gt)
    if pred.shape != gt.shape or pred.ndim != 2:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} must be label images of one size")
    pred_ids, gt_ids = _ids(pred), _ids(gt)
    counts = _pair_counts(pred, gt, pred_ids, gt_ids).astype(np.float64)
    pred_area = np.array([(pred == i).sum() for i in pred_ids], np.float64)
    gt_area = np.array([(gt == i).sum() for i in gt_ids], np.float64)
    f_pair = 2 * counts / np.maximum(gt_area[:, None] + pred_area[None, :], 1)
    rows, cols = hungarian(-f_pair) if counts.size else (np.zeros(0, np.int64), np.zeros(0, np.int64))
    matched = counts[rows, cols].sum()
    overlap_p = matched / pred_area.sum() if pred_area.sum() > 0 else 1.0
    overlap_r = matched / gt_area.sum() if gt_area.sum() > 0 else 1.0
    # Boundaries: each pixel belongs to one instance, so a boundary label image per side holds them all.
    radius = boundary_radius(pred.shape, tolerance)
    pred_b = [boundary_map(pred == i) for i in pred_ids]
    gt_b = [boundary_map(gt == i) for i in gt_ids]
    pred_b_total = float(sum(b.sum() for b in pred_b))
    gt_b_total = float(sum(b.sum() for b in gt_b))
    pred_hit = gt_hit = 0.0
    for r, c in zip(rows, cols):
        pred_hit += float((pred_b[c] & _dilate(gt_b[r], radius)).sum())
        gt_hit += float((gt_b[r] & _dilate(pred_b[c], radius)).sum())
    boundary_p = pred_hit / pred_b_total if pred_b_total > 0 else 1.0
    boundary_r = gt_hit / gt_b_total if gt_b_total > 0 else 1.0
    found = int((f_pair[rows, cols] >= OBJECT_F_THRESHOLD).sum())
    return ImageOverlap(overlap_p, overlap_r, _f(overlap_p, overlap_r), boundary_p, boundary_r,
                        _f(boundary_p, boundary_r), len(gt_ids), found)


# ---- the open-set per-object table -------------------------------------------------------------------------
@dataclass
class OpenSetCounts:
    """Counts of the per-object open-set table; add them up over images, then ``rates()``."""
    known_objects: int = 0
    unknown_objects: int = 0
    known_found_with_class: int = 0
    known_labelled_unknown: int = 0
    unknown_found_as_unknown: int = 0
    unknown_labelled_known: int = 0
    detections: int = 0
    empty_detections: int = 0

    def add(self, other: "OpenSetCounts") -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def rates(self) -> Dict[str, float]:
        def share(a, b):
            return a / b if b else float("nan")
        objects = self.known_objects + self.unknown_objects
        return {
            "detections_per_object": share(self.detections, objects),
            "empty_detections": self.empty_detections,
            "known_recall": share(self.known_found_with_class, self.known_objects),
            "known_labelled_unknown": share(self.known_labelled_unknown, self.known_objects),
            "unknown_recall": share(self.unknown_found_as_unknown, self.unknown_objects),
            "unknown_labelled_known": share(self.unknown_labelled_known, self.unknown_objects),
        }


def open_set_counts(pred: np.ndarray, pred_classes: Mapping[int, int], gt: np.ndarray,
                    gt_classes: Mapping[int, int]) -> OpenSetCounts:
    """The per-object table of one image.

    pred / gt: label images; pred_classes: every *listed* instance id -> class (an id absent from ``pred`` is an
    empty detection); gt_classes: every ground-truth id -> class (known index or UNKNOWN_ID)."""
    pred, gt = np.asarray(pred), np.asarray(gt)
    if pred.shape != gt.shape or pred.ndim != 2:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} must be label images of one size")
    listed = np.array(sorted(int(i) for i in pred_classes), np.int64)
    present = set(_ids(pred).tolist())
    unlisted = present - set(listed.tolist())
    if unlisted:
        raise ValueError(f"label image values {sorted(unlisted)} are not listed detections")
    gt_ids = np.array(sorted(int(i) for i in gt_classes), np.int64)
    counts = OpenSetCounts(detections=len(listed), empty_detections=int(sum(i not in present for i in listed)))
    if len(gt_ids) == 0:
        return counts
    inter = _pair_counts(pred, gt, listed, gt_ids).astype(np.float64) if len(listed) else \
        np.zeros((len(gt_ids), 0))
    gt_area = np.array([(gt == i).sum() for i in gt_ids], np.float64)
    pred_area = np.array([(pred == i).sum() for i in listed], np.float64)
    iou = inter / np.maximum(gt_area[:, None] + pred_area[None, :] - inter, 1)
    for row, gt_id in enumerate(gt_ids):
        known = gt_classes[int(gt_id)] != UNKNOWN_ID
        if known:
            counts.known_objects += 1
        else:
            counts.unknown_objects += 1
        if iou.shape[1] == 0 or inter[row].max() == 0:
            continue
        best = int(np.argmax(iou[row]))
        label = pred_classes[int(listed[best])]
        found = iou[row, best] >= FOUND_IOU
        if known:
            counts.known_found_with_class += int(found and label == gt_classes[int(gt_id)])
            counts.known_labelled_unknown += int(label == UNKNOWN_ID)
        else:
            counts.unknown_found_as_unknown += int(found and label == UNKNOWN_ID)
            counts.unknown_labelled_known += int(label != UNKNOWN_ID)
    return counts


@dataclass
class InstanceMapEvaluator:
    """Accumulates both metric families over images; ``summary()`` gives the figures (JSON-ready)."""
    tolerance: float = BOUNDARY_TOLERANCE
    counts: OpenSetCounts = field(default_factory=OpenSetCounts)
    per_image: List[ImageOverlap] = field(default_factory=list)

    def add(self, pred: np.ndarray, pred_classes: Mapping[int, int], gt: np.ndarray,
            gt_classes: Mapping[int, int]) -> None:
        self.counts.add(open_set_counts(pred, pred_classes, gt, gt_classes))
        self.per_image.append(overlap_boundary_metrics(pred, gt, self.tolerance))

    def summary(self) -> Dict:
        out: Dict = {"images": len(self.per_image), "known_objects": self.counts.known_objects,
                     "unknown_objects": self.counts.unknown_objects, "detections": self.counts.detections}
        out.update(self.counts.rates())
        for name in ("overlap_p", "overlap_r", "overlap_f", "boundary_p", "boundary_r", "boundary_f"):
            values = [getattr(m, name) for m in self.per_image]
            out[name] = float(np.mean(values)) if values else float("nan")
        objects = sum(m.objects for m in self.per_image)
        out["objects_F075"] = sum(m.objects_f075 for m in self.per_image) / objects if objects else float("nan")
        return out


def gt_label_image(annotations: Sequence[dict], height: int, width: int,
                   known_category_ids: Sequence[int]) -> tuple:
    """(label image, {id: class}) of one image's COCO annotations: ids 1..N in annotation order (a later one
    wins a shared pixel); class = index of the category among the known ids, or UNKNOWN_ID."""
    known = {cid: k for k, cid in enumerate(sorted(known_category_ids))}
    label = np.zeros((height, width), np.int32)
    classes = {}
    for index, ann in enumerate(annotations, start=1):
        mask = mask_utils.decode(segmentation_to_rle(ann["segmentation"], height, width)).astype(bool)
        label[mask] = index
        classes[index] = known.get(int(ann["category_id"]), UNKNOWN_ID)
    return label, classes


FIGURES = (("detections_per_object", "detections per object", 2), ("empty_detections", "detections without pixels", 0),
           ("unknown_recall", "unknown objects found as unknown (IoU>=0.5)", 2),
           ("unknown_labelled_known", "unknown objects labelled known", 2),
           ("known_recall", "known objects found with their class (IoU>=0.5)", 2),
           ("known_labelled_unknown", "known objects labelled unknown", 2),
           ("overlap_p", "Overlap P", 3), ("overlap_r", "Overlap R", 3), ("overlap_f", "Overlap F", 3),
           ("boundary_p", "Boundary P", 3), ("boundary_r", "Boundary R", 3), ("boundary_f", "Boundary F", 3),
           ("objects_F075", "objects with F >= 0.75", 3))


def format_instance_table(columns: Mapping[str, Mapping], label_width: int = 0) -> str:
    """A text table: one row per figure, one column per output (e.g. {"raw": summary, "instance_map": ...})."""
    names = list(columns)
    width = max([label_width] + [len(label) + 2 for _, label, _ in FIGURES])
    lines = [f"{'per object':<{width}}" + "".join(f"{n:>14}" for n in names)]
    for key, label, digits in FIGURES:
        cells = []
        for n in names:
            value = columns[n].get(key)
            cells.append("-" if value is None or (isinstance(value, float) and math.isnan(value))
                         else f"{value:.{digits}f}")
        lines.append(f"{label:<{width}}" + "".join(f"{c:>14}" for c in cells))
    return "\n".join(lines)
