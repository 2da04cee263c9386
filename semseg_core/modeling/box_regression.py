"""Box parameterisations (detectron2 numerics).

- `Box2BoxTransform`: the classic (dx, dy, dw, dh) encoding with weights, used by the ROI box head.
- `Box2BoxTransformLinear`: (l, t, r, b) distances from the anchor centre, optionally normalised by
  the anchor size, ReLU on decode; used by the classification-free RPN.
"""
import math
from typing import Sequence, Tuple

import torch
from torch.nn import functional as F

# Largest allowed dw/dh before exp(), as in detectron2: avoids exp overflow on huge deltas.
DEFAULT_SCALE_CLAMP = math.log(1000.0 / 16)


def _widths_centres(boxes: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    widths = boxes[:, 2] - boxes[:, 0]
    heights = boxes[:, 3] - boxes[:, 1]
    ctr_x = boxes[:, 0] + 0.5 * widths
    ctr_y = boxes[:, 1] + 0.5 * heights
    return widths, heights, ctr_x, ctr_y


class Box2BoxTransform:
    """Encode/decode boxes as (dx, dy, dw, dh) divided by `weights` (width = x2 - x1, no +1)."""

    def __init__(self, *, weights: Sequence[float] = (10.0, 10.0, 5.0, 5.0),
                 scale_clamp: float = DEFAULT_SCALE_CLAMP):
        """
        Args:
            weights: (wx, wy, ww, wh) dividing the encoded (dx, dy, dw, dh) (MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS).
            scale_clamp: upper bound on dw, dh before exp() when decoding.
        """
        if len(weights) != 4:
            raise ValueError(f"Box2BoxTransform needs 4 weights, got {weights!r}")
        self.weights = tuple(float(w) for w in weights)
        self.scale_clamp = scale_clamp

    def get_deltas(self, src_boxes: torch.Tensor, target_boxes: torch.Tensor) -> torch.Tensor:
        """src_boxes, target_boxes: N x 4 xyxy -> N x 4 deltas that map src onto target."""
        sw, sh, sx, sy = _widths_centres(src_boxes)
        tw, th, tx, ty = _widths_centres(target_boxes)
        wx, wy, ww, wh = self.weights
        dx = wx * (tx - sx) / sw
        dy = wy * (ty - sy) / sh
        dw = ww * torch.log(tw / sw)
        dh = wh * torch.log(th / sh)
        return torch.stack((dx, dy, dw, dh), dim=1)

    def apply_deltas(self, deltas: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """deltas N x 4 (class-agnostic), boxes N x 4 -> decoded N x 4 xyxy."""
        deltas = deltas.float()
        boxes = boxes.to(deltas.dtype)
        w, h, cx, cy = _widths_centres(boxes)
        wx, wy, ww, wh = self.weights
        dx = deltas[:, 0] / wx
        dy = deltas[:, 1] / wy
        dw = torch.clamp(deltas[:, 2] / ww, max=self.scale_clamp)
        dh = torch.clamp(deltas[:, 3] / wh, max=self.scale_clamp)
        pcx = dx * w + cx
        pcy = dy * h + cy
        pw = torch.exp(dw) * w
        ph = torch.exp(dh) * h
        return torch.stack((pcx - 0.5 * pw, pcy - 0.5 * ph, pcx + 0.5 * pw, pcy + 0.5 * ph), dim=1)


class Box2BoxTransformLinear:
    """(l, t, r, b) distances from the anchor centre to the box sides, divided by the anchor
    width (l, r) / height (t, b) when `normalize_by_size`. Decoding applies ReLU, so a decoded box
    always contains the anchor centre (detectron2 behaviour)."""

    def __init__(self, *, normalize_by_size: bool = True):
        """
        Args:
            normalize_by_size: divide the distances by the anchor width / height (SemSeg: True).
        """
        self.normalize_by_size = normalize_by_size

    def get_deltas(self, src_boxes: torch.Tensor, target_boxes: torch.Tensor) -> torch.Tensor:
        sw, sh, sx, sy = _widths_centres(src_boxes)
        deltas = torch.stack(
            (sx - target_boxes[:, 0], sy - target_boxes[:, 1], target_boxes[:, 2] - sx, target_boxes[:, 3] - sy),
            dim=1,
        )
        if self.normalize_by_size:
            deltas = deltas / torch.stack((sw, sh, sw, sh), dim=1)
        return deltas

    def apply_deltas(self, deltas: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        deltas = F.relu(deltas.float())
        boxes = boxes.to(deltas.dtype)
        w, h, cx, cy = _widths_centres(boxes)
        if self.normalize_by_size:
            deltas = deltas * torch.stack((w, h, w, h), dim=1)
        return torch.stack((cx - deltas[:, 0], cy - deltas[:, 1], cx + deltas[:, 2], cy + deltas[:, 3]), dim=1)


def elementwise_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """IoU of row i of boxes1 with row i of boxes2 (N x 4 each) -> N."""
    lt = torch.max(boxes1[:, :2], boxes2[:, :2])
    rb = torch.min(boxes1[:, 2:], boxes2[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=1)
    area1 = (boxes1[:, 2] - boxes1[:, 0]).clamp(min=0) * (boxes1[:, 3] - boxes1[:, 1]).clamp(min=0)
    area2 = (boxes2[:, 2] - boxes2[:, 0]).clamp(min=0) * (boxes2[:, 3] - boxes2[:, 1]).clamp(min=0)
    union = area1 + area2 - inter
    return inter / union.clamp(min=1e-12)


def iou_loss(pred_boxes: torch.Tensor, target_boxes: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Summed plain (1 - IoU) loss, IoU clamped to >= eps (the authors' CF-RPN loss; not -log IoU)."""
    if pred_boxes.numel() == 0:
        return pred_boxes.sum() * 0.0
    ious = elementwise_iou(pred_boxes, target_boxes).clamp(min=eps)
    return (1.0 - ious).sum()


def clip_boxes(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    x1 = boxes[:, 0].clamp(min=0, max=width)
    y1 = boxes[:, 1].clamp(min=0, max=height)
    x2 = boxes[:, 2].clamp(min=0, max=width)
    y2 = boxes[:, 3].clamp(min=0, max=height)
    return torch.stack((x1, y1, x2, y2), dim=1)


def nonempty(boxes: torch.Tensor, threshold: float = 0.0) -> torch.Tensor:
    """Mask of boxes whose width and height are both > threshold."""
    return ((boxes[:, 2] - boxes[:, 0]) > threshold) & ((boxes[:, 3] - boxes[:, 1]) > threshold)
