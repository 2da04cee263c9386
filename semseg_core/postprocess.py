"""Every test-time rule in one place: from the model's raw open-set detections to what a caller gets.

    options = PostprocessOptions(output="instance_map")          # frozen, validated
    result = predictor(image, options=options)

Two outputs:

- ``"raw"`` (the default; faithful): the authors' output as the model returns it (unknowns and knowns from two
  separate NMS sets, so one object can come out several times, as a known class and as unknown), filtered by the
  score thresholds. A pixel of the label image goes to the highest-scoring mask covering it, so some listed
  detections may own no pixel. This is what the open-set evaluator scores for comparisons with the paper.
- ``"instance_map"`` (ours; the planner output): non-overlapping instances, one per object, each with one label
  (a known class or unknown) and one confidence; every instance owns pixels and its box is the box of its
  visible mask. The rule, measured on held-out synthetic scenes (README "What a planner gets"):

  1. every raw detection is ranked by its objectness sqrt(IoU x centerness), the one score both the known and
     the unknown set carry (a class probability and an objectness do not compare);
  2. duplicates: a detection whose mask overlaps a higher-ranked one at mask IoU > ``duplicate_iou`` joins that
     detection's object (vectorised "fast NMS": one matrix product, no per-instance loop);
  3. label: the object's evidence is the highest known-class probability among its detections; known (that
     class) when it reaches ``known_min_probability``, unknown otherwise. With ``unknown_distance_threshold``
     >= 0 a known label also needs that detection's distance to the nearest prototype within it;
  4. confidence: the class probability of a known instance, the objectness of an unknown one; then the score
     thresholds;
  5. painting in rank order, as panoptic merging does: an instance keeps only the pixels no higher-ranked
     instance took, and is dropped when less than ``min_visible_fraction`` of its mask is left.

``unknown_distance_threshold`` (>= 0) in the raw output re-takes the model's known/unknown decision at that
distance from the distances and class probabilities the model returns for every detection, then re-runs the
model's own NMS of each set; -1 keeps the model's own decision (``MODEL.DML.UNK_THR``). Nothing is baked into
the model, so a change works both ways at the next frame.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Mapping, Optional

import torch
from torchvision.ops import batched_nms, nms

from .constants import UNKNOWN_ID
from .modeling.postprocess import label_image_from_masks, paste_masks

OUTPUT_MODES = ("raw", "instance_map")


class PostprocessError(ValueError):
    """A post-processing option out of range or a model output that lacks what a rule needs."""


def _check_range(name: str, value, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PostprocessError(f"PostprocessOptions.{name} must be a number, got {value!r}")
    if not low <= value <= high:
        raise PostprocessError(f"PostprocessOptions.{name} = {value} is outside [{low}, {high}]")


@dataclass(frozen=True)
class PostprocessOptions:
    """Every test-time rule applied after the model. The defaults are the authors' (raw output, nothing dropped).

    Args:
        output: "raw" (the authors' output) or "instance_map" (one instance per object; see the module docstring).
        known_score_threshold: drop known detections / instances whose score (class probability) is below this.
        unknown_score_threshold: drop unknown detections / instances whose score (objectness) is below this.
        unknown_distance_threshold: raw output: -1 keeps the model's own known/unknown decision (MODEL.DML.UNK_THR);
            >= 0: a detection is unknown when its cosine distance to the nearest prototype exceeds this. Instance
            map: -1 = no distance veto (measured: the class probability alone separates better); >= 0: a known label
            also needs its detection within this distance.
        max_detections: keep at most this many detections / instances per image (highest first); 0 = no cap.
        duplicate_iou: instance map: mask IoU above which a lower-ranked detection is a duplicate of the object.
        known_min_probability: instance map: the known-class probability an object needs to be labelled known.
        min_visible_fraction: instance map: share of its mask an instance must keep after the higher-ranked
            instances are painted.
    """

    output: str = "raw"
    known_score_threshold: float = 0.0
    unknown_score_threshold: float = 0.0
    unknown_distance_threshold: float = -1.0
    max_detections: int = 0
    duplicate_iou: float = 0.5
    known_min_probability: float = 0.95
    min_visible_fraction: float = 0.5

    def __post_init__(self):
        if self.output not in OUTPUT_MODES:
            raise PostprocessError(f"PostprocessOptions.output must be one of {', '.join(OUTPUT_MODES)}, "
                                   f"got {self.output!r}")
        for name in ("known_score_threshold", "unknown_score_threshold", "duplicate_iou", "known_min_probability",
                     "min_visible_fraction"):
            _check_range(name, getattr(self, name), 0.0, 1.0)
        _check_range("unknown_distance_threshold", self.unknown_distance_threshold, -1.0, 2.0)
        if -1.0 < self.unknown_distance_threshold < 0.0:
            raise PostprocessError("PostprocessOptions.unknown_distance_threshold must be -1 (the model's own "
                                   f"decision) or >= 0, got {self.unknown_distance_threshold}")
        if isinstance(self.max_detections, bool) or not isinstance(self.max_detections, int) \
                or self.max_detections < 0:
            raise PostprocessError(f"PostprocessOptions.max_detections must be an integer >= 0, "
                                   f"got {self.max_detections!r}")

    @classmethod
    def field_names(cls) -> tuple:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_mapping(cls, values: Mapping) -> "PostprocessOptions":
        """Options from a mapping holding (at least) every field, e.g. a node's parameter snapshot."""
        missing = [name for name in cls.field_names() if name not in values]
        if missing:
            raise PostprocessError(f"post-processing values are missing {', '.join(missing)}")
        return cls(**{name: values[name] for name in cls.field_names()})


# What the node publishes by default (its parameter defaults are read from here): the instance map, and score
# thresholds that leave out the weakest detections.
PLANNER_DEFAULTS = PostprocessOptions(output="instance_map", known_score_threshold=0.3, unknown_score_threshold=0.3)


@dataclass(frozen=True)
class ModelRules:
    """The model's own test-time values that the raw output's re-decision repeats (from the model config).

    Args:
        unknown_threshold: MODEL.DML.UNK_THR.
        known_min_probability: MODEL.SOFTMAXCLS.KNOWN_SCORE_THRESH (a known detection's minimum probability).
        unknown_min_objectness: MODEL.SOFTMAXCLS.UNKNOWN_SCORE_THRESH.
        known_nms_iou, unknown_nms_iou: MODEL.SOFTMAXCLS.KNOWN_NMS_THRESH / UNKNOWN_NMS_THRESH.
        known_topk, unknown_topk: MODEL.SOFTMAXCLS.KNOWN_TOPK / UNKNOWN_TOPK.
    """

    unknown_threshold: float
    known_min_probability: float = 0.05
    unknown_min_objectness: float = 0.05
    known_nms_iou: float = 0.5
    unknown_nms_iou: float = 0.5
    known_topk: int = 50
    unknown_topk: int = 50

    @classmethod
    def from_config(cls, cfg) -> "ModelRules":
        s = cfg.MODEL.SOFTMAXCLS
        return cls(unknown_threshold=float(cfg.MODEL.DML.UNK_THR), known_min_probability=float(s.KNOWN_SCORE_THRESH),
                   unknown_min_objectness=float(s.UNKNOWN_SCORE_THRESH), known_nms_iou=float(s.KNOWN_NMS_THRESH),
                   unknown_nms_iou=float(s.UNKNOWN_NMS_THRESH), known_topk=int(s.KNOWN_TOPK),
                   unknown_topk=int(s.UNKNOWN_TOPK))


@dataclass
class Instances:
    """Post-processed instances of one image, torch tensors on the model's device, in output order.

    ``label_image`` (H x W int32): 0 background, k + 1 = instance k. ``masks`` (N x H x W bool) is None when the
    caller did not ask for them in the raw output (then only the label image is built)."""

    boxes: torch.Tensor
    scores: torch.Tensor
    classes: torch.Tensor
    unknown_scores: torch.Tensor
    masks: Optional[torch.Tensor]
    label_image: torch.Tensor


def _need(out: dict, *keys: str) -> None:
    missing = [k for k in keys if k not in out]
    if missing:
        raise PostprocessError(f"the model output lacks {', '.join(missing)}, which this post-processing rule "
                               "needs (a SemSeg model of this version returns them)")


def _rows(out: dict, keep: torch.Tensor, n: int) -> dict:
    """The selected rows of every per-detection tensor of a model output (other entries as they are)."""
    return {k: v[keep] if torch.is_tensor(v) and v.shape[:1] == (n,) else v for k, v in out.items()}


def redecide_unknown(out: dict, threshold: float, rules: ModelRules) -> dict:
    """The model output with its known/unknown decision re-taken at ``threshold`` (distance to the nearest
    prototype), then the model's own per-set rules re-run (score floor, NMS, top-k) on the returned detections.

    A known detection beyond the threshold becomes unknown with its objectness as score; an unknown one within it
    becomes its most probable known class with that probability as score. At the model's own threshold this
    changes nothing."""
    _need(out, "objectness", "class_probs", "unknown_scores")
    n = len(out["scores"])
    was_unknown = out["classes"] == UNKNOWN_ID
    now_unknown = out["unknown_scores"].float() > threshold
    probability, best_class = out["class_probs"].float().max(dim=1)
    classes = torch.where(now_unknown, torch.full_like(out["classes"], UNKNOWN_ID),
                          torch.where(was_unknown, best_class, out["classes"]))
    scores = out["scores"].float()
    scores = torch.where(now_unknown & ~was_unknown, out["objectness"].float(), scores)
    scores = torch.where(~now_unknown & was_unknown, probability, scores)
    boxes = out["boxes"].float()
    unknown_rows = torch.nonzero(now_unknown & (scores > rules.unknown_min_objectness), as_tuple=True)[0]
    unknown_rows = unknown_rows[nms(boxes[unknown_rows], scores[unknown_rows], rules.unknown_nms_iou)]
    known_rows = torch.nonzero(~now_unknown & (scores > rules.known_min_probability), as_tuple=True)[0]
    known_rows = known_rows[batched_nms(boxes[known_rows], scores[known_rows], classes[known_rows],
                                        rules.known_nms_iou)]
    keep = torch.cat([unknown_rows[: rules.unknown_topk], known_rows[: rules.known_topk]])
    changed = dict(out, classes=classes, scores=scores)
    return _rows(changed, keep, n)


def _score_filter(scores: torch.Tensor, unknown: torch.Tensor, options: PostprocessOptions) -> torch.Tensor:
    return torch.where(unknown, scores >= options.unknown_score_threshold, scores >= options.known_score_threshold)


def raw_output(out: dict, height: int, width: int, options: PostprocessOptions, rules: ModelRules,
               return_masks: bool = True) -> Instances:
    """The authors' output: thresholds (and an optional re-decision), sorted by score; masks pasted only for the
    kept detections; the label image gives a pixel to the highest-scoring mask covering it."""
    threshold = options.unknown_distance_threshold
    if threshold >= 0 and threshold != rules.unknown_threshold:
        out = redecide_unknown(out, threshold, rules)
    scores = out["scores"].float()
    keep = _score_filter(scores, out["classes"] == UNKNOWN_ID, options)
    rows = torch.nonzero(keep, as_tuple=True)[0]
    rows = rows[torch.argsort(scores[rows], descending=True, stable=True)]
    if options.max_detections:
        rows = rows[: options.max_detections]
    boxes = out["boxes"].float()[rows]
    if "mask_probs" in out and len(rows):
        masks = paste_masks(out["mask_probs"][rows].float(), boxes, height, width)
    else:
        masks = torch.zeros((len(rows), height, width), dtype=torch.bool, device=boxes.device)
    return Instances(boxes=boxes, scores=scores[rows], classes=out["classes"][rows],
                     unknown_scores=out["unknown_scores"].float()[rows], masks=masks if return_masks else None,
                     label_image=label_image_from_masks(masks))


def mask_iou_matrix(masks: torch.Tensor) -> torch.Tensor:
    """N x N IoU of N x H x W bool masks, as one matrix product (float32: exact pixel counts up to 2^24)."""
    flat = masks.flatten(1).float()
    inter = flat @ flat.T
    area = flat.sum(dim=1)
    return inter / (area[:, None] + area[None, :] - inter).clamp(min=1.0)


def visible_boxes(masks: torch.Tensor) -> torch.Tensor:
    """N x 4 xyxy boxes of N x H x W bool masks (x1, y1 one past the last pixel); zeros for an empty mask."""
    n, height, width = masks.shape
    cols, rows = masks.any(dim=1), masks.any(dim=2)  # N x W, N x H
    x0 = cols.float().argmax(dim=1)
    x1 = width - cols.flip(1).float().argmax(dim=1)
    y0 = rows.float().argmax(dim=1)
    y1 = height - rows.flip(1).float().argmax(dim=1)
    boxes = torch.stack([x0, y0, x1, y1], dim=1).float()
    return torch.where(cols.any(dim=1, keepdim=True), boxes, torch.zeros_like(boxes))


def _paint(masks: torch.Tensor) -> tuple:
    """(label image, visible pixel count per instance) of masks painted in order (first one on top)."""
    label = label_image_from_masks(masks)
    visible = torch.bincount(label.flatten().long(), minlength=len(masks) + 1)[1:]
    return label, visible


def instance_map(out: dict, height: int, width: int, options: PostprocessOptions) -> Instances:
    """Non-overlapping instances, one per object, one label and one confidence each (module docstring)."""
    _need(out, "objectness", "class_probs", "unknown_scores", "mask_probs")
    device = out["boxes"].device
    objectness = out["objectness"].float()
    order = torch.argsort(objectness, descending=True, stable=True)
    boxes = out["boxes"].float()[order]
    probs = out["class_probs"].float()[order]
    distances = out["unknown_scores"].float()[order]
    objectness = objectness[order]
    n = len(order)
    if n == 0:
        empty = torch.zeros((0,), device=device)
        return Instances(boxes=boxes, scores=empty, classes=torch.zeros((0,), dtype=torch.int64, device=device),
                         unknown_scores=empty, masks=torch.zeros((0, height, width), dtype=torch.bool, device=device),
                         label_image=torch.zeros((height, width), dtype=torch.int32, device=device))
    masks = paste_masks(out["mask_probs"][order].float(), boxes, height, width)
    # Duplicates: joined to every higher-ranked detection they overlap; kept when they overlap none.
    same_object = torch.triu(mask_iou_matrix(masks) > options.duplicate_iou, diagonal=1)
    kept = ~same_object.any(dim=0)
    members = same_object | torch.eye(n, dtype=torch.bool, device=device)  # row i: detection i's object
    # Label evidence: the highest known-class probability among the object's detections.
    evidence = members[:, :, None] * probs[None, :, :]  # N x N x K
    per_class, source = evidence.max(dim=1)  # N x K: best probability of each class, and the detection giving it
    probability, label = per_class.max(dim=1)
    source = source.gather(1, label[:, None])[:, 0]
    known = probability >= options.known_min_probability
    if options.unknown_distance_threshold >= 0:
        known &= distances[source] <= options.unknown_distance_threshold
    classes = torch.where(known, label, torch.full_like(label, UNKNOWN_ID))
    scores = torch.where(known, probability, objectness)
    kept &= _score_filter(scores, ~known, options)
    rows = torch.nonzero(kept, as_tuple=True)[0]  # still in rank order
    if options.max_detections:
        rows = rows[: options.max_detections]
    masks = masks[rows]
    # Painting in rank order; too-occluded instances go, which can only uncover pixels of the ones that stay.
    _, visible = _paint(masks)
    area = masks.flatten(1).sum(dim=1)
    stays = (visible > 0) & (visible >= options.min_visible_fraction * area)
    rows, masks = rows[stays], masks[stays]
    label_image, _ = _paint(masks)
    # Output order: confidence, descending; the instances no longer overlap, so their visible masks say it all.
    final = torch.argsort(scores[rows], descending=True, stable=True)
    rows = rows[final]
    ids = torch.arange(1, len(rows) + 1, dtype=torch.int32, device=device)
    lookup = torch.zeros(len(rows) + 1, dtype=torch.int32, device=device)
    lookup[final + 1] = ids
    label_image = lookup[label_image.long()]
    visible_masks = label_image[None] == ids[:, None, None]
    return Instances(boxes=visible_boxes(visible_masks), scores=scores[rows], classes=classes[rows],
                     unknown_scores=distances[rows], masks=visible_masks, label_image=label_image)


def postprocess(out: dict, height: int, width: int, options: PostprocessOptions, rules: ModelRules,
                return_masks: bool = True) -> Instances:
    """One image's model output -> Instances, by ``options.output``."""
    if options.output == "instance_map":
        instances = instance_map(out, height, width, options)
        if not return_masks:
            instances.masks = None
        return instances
    return raw_output(out, height, width, options, rules, return_masks)
