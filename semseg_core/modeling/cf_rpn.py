"""Classification-free RPN (the authors' `OLNRPN`): box distances + centerness, no objectness.

Per image and anchor: ltrb distances (Box2BoxTransformLinear, ReLU on decode) and a sigmoid
centerness. Two independent anchor labellings: one for regression (IoU loss on positives), one for
centerness (L1 loss on sampled positives and negatives, FCOS centerness target).
Proposals = per-level top-k by centerness, clipped, empty dropped; NO NMS unless `apply_nms`.
"""
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.ops import batched_nms, box_iou

from ..config import CfgNode
from .anchors import AnchorGenerator
from .box_regression import Box2BoxTransformLinear, clip_boxes, iou_loss, nonempty
from .matcher import Matcher, sample_binary_labels


class Proposals(NamedTuple):
    """One image's proposals, as the ROI heads receive them."""

    boxes: torch.Tensor  # K x 4 xyxy, clipped to the image, none empty
    centerness: torch.Tensor  # K sigmoid centerness in [0, 1] (the RPN's score; no objectness)


class CFRPNHead(nn.Module):
    """3x3 conv + ReLU, L2 normalisation over channels, then 1x1 -> 4 (ltrb) and 1x1 -> 1 (centerness)."""

    def __init__(self, *, in_channels: int, num_anchors: int = 1):
        """
        Args:
            in_channels: channels of every input feature level (the FPN width).
            num_anchors: anchors per location (1 for SemSeg: one square anchor).
        """
        super().__init__()
        self.conv = nn.Conv2d(in_channels, in_channels, 3, padding=1)
        self.box_deltas = nn.Conv2d(in_channels, 4 * num_anchors, 1)
        self.centerness = nn.Conv2d(in_channels, num_anchors, 1)
        for layer in (self.conv, self.box_deltas, self.centerness):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.constant_(layer.bias, 0.0)

    def forward(self, features: List[torch.Tensor]) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
        """-> per level: centerness logits N x A x H x W, deltas N x 4A x H x W."""
        ctr, deltas = [], []
        for x in features:
            hidden = F.normalize(F.relu(self.conv(x)), p=2, dim=1, eps=1e-12)
            ctr.append(self.centerness(hidden))
            deltas.append(self.box_deltas(hidden))
        return ctr, deltas


def centerness_targets(anchors: torch.Tensor, gt_boxes: torch.Tensor) -> torch.Tensor:
    """FCOS centerness of each anchor centre w.r.t. its GT box (row-wise); 0 if the centre is outside."""
    cx = (anchors[:, 0] + anchors[:, 2]) * 0.5
    cy = (anchors[:, 1] + anchors[:, 3]) * 0.5
    left, top = cx - gt_boxes[:, 0], cy - gt_boxes[:, 1]
    right, bottom = gt_boxes[:, 2] - cx, gt_boxes[:, 3] - cy
    inside = torch.stack((left, top, right, bottom), dim=1).min(dim=1).values > 0
    lr = torch.min(left, right) / torch.max(left, right).clamp(min=1e-12)
    tb = torch.min(top, bottom) / torch.max(top, bottom).clamp(min=1e-12)
    ctr = torch.sqrt((lr * tb).clamp(min=0))
    return torch.where(inside, ctr, torch.zeros_like(ctr))


class CFRPN(nn.Module):
    """Classification-free region proposal network: per-level top-k by centerness, no objectness."""

    def __init__(
        self,
        *,
        head: CFRPNHead,
        anchor_generator: AnchorGenerator,
        in_features: Sequence[str] = ("p2", "p3", "p4", "p5", "p6"),
        reg_iou_thresholds: Sequence[float] = (0.3, 0.7),
        ctr_iou_thresholds: Sequence[float] = (0.1, 0.3),
        iou_labels: Sequence[int] = (0, -1, 1),
        batch_size_per_image: int = 256,
        positive_fraction: float = 0.5,
        ctr_positive_fraction: float = 1.0,
        pre_nms_topk: Tuple[int, int] = (2000, 1000),
        post_nms_topk: Tuple[int, int] = (2000, 1000),
        nms_thresh: Tuple[float, float] = (1.0, 0.7),
        apply_nms: bool = False,
        min_box_size: float = 0.0,
        loc_loss_weight: float = 10.0,
        ctr_loss_weight: float = 1.0,
    ):
        """
        Args:
            head: predicts centerness logits and ltrb deltas per level.
            anchor_generator: one anchor per location and level.
            in_features: feature-map names the RPN reads, finest first (MODEL.RPN.IN_FEATURES).
            reg_iou_thresholds: anchor labelling for the box regression (MODEL.RPN.IOU_THRESHOLDS).
            ctr_iou_thresholds: anchor labelling for the centerness (MODEL.RPN.IOU_THRESHOLDS_OBJECTNESS).
            iou_labels: labels of the bands between the thresholds (MODEL.RPN.IOU_LABELS).
            batch_size_per_image: anchors sampled per image for each loss (MODEL.RPN.BATCH_SIZE_PER_IMAGE).
            positive_fraction: largest share of positives in the regression sample.
            ctr_positive_fraction: largest share of positives in the centerness sample.
            pre_nms_topk: (training, inference) proposals kept per level by centerness.
            post_nms_topk: (training, inference) proposals kept after NMS (only with `apply_nms`).
            nms_thresh: (training, inference) NMS IoU threshold (only with `apply_nms`).
            apply_nms: our switch; the authors run no NMS on the proposals (faithful = False).
            min_box_size: proposals with width or height <= this are dropped (MODEL.PROPOSAL_GENERATOR.MIN_SIZE).
            loc_loss_weight: weight of the IoU loss on the boxes.
            ctr_loss_weight: weight of the L1 loss on the centerness.
        """
        super().__init__()
        self.head = head
        self.anchor_generator = anchor_generator
        self.in_features = list(in_features)
        self.box2box = Box2BoxTransformLinear(normalize_by_size=True)
        self.reg_matcher = Matcher(thresholds=reg_iou_thresholds, labels=iou_labels, allow_low_quality_matches=True)
        self.ctr_matcher = Matcher(thresholds=ctr_iou_thresholds, labels=iou_labels, allow_low_quality_matches=True)
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = positive_fraction
        self.ctr_positive_fraction = ctr_positive_fraction
        self.pre_nms_topk = {True: pre_nms_topk[0], False: pre_nms_topk[1]}
        self.post_nms_topk = {True: post_nms_topk[0], False: post_nms_topk[1]}
        self.nms_thresh = {True: nms_thresh[0], False: nms_thresh[1]}
        self.apply_nms = apply_nms
        self.min_box_size = min_box_size
        self.loc_loss_weight = loc_loss_weight
        self.ctr_loss_weight = ctr_loss_weight

    @classmethod
    def from_config(cls, cfg: CfgNode, in_channels: int) -> "CFRPN":
        rpn = cfg.MODEL.RPN
        ag = cfg.MODEL.ANCHOR_GENERATOR
        in_features = list(rpn.IN_FEATURES)
        sizes = [s[0] if isinstance(s, (list, tuple)) else s for s in ag.SIZES]
        if len(sizes) == 1 and len(in_features) > 1:
            raise ValueError("MODEL.ANCHOR_GENERATOR.SIZES needs one size per RPN level")
        ratios = ag.ASPECT_RATIOS[0] if isinstance(ag.ASPECT_RATIOS[0], (list, tuple)) else ag.ASPECT_RATIOS
        strides = [2 ** int(name[1:]) for name in in_features]
        anchor_generator = AnchorGenerator(sizes=sizes, strides=strides, aspect_ratios=ratios, offset=ag.OFFSET)
        head = CFRPNHead(in_channels=in_channels, num_anchors=anchor_generator.num_anchors_per_location)
        return cls(
            head=head,
            anchor_generator=anchor_generator,
            in_features=in_features,
            reg_iou_thresholds=rpn.IOU_THRESHOLDS,
            ctr_iou_thresholds=rpn.IOU_THRESHOLDS_OBJECTNESS,
            iou_labels=rpn.IOU_LABELS,
            batch_size_per_image=rpn.BATCH_SIZE_PER_IMAGE,
            positive_fraction=rpn.POSITIVE_FRACTION,
            ctr_positive_fraction=rpn.CTR_POSITIVE_FRACTION,
            pre_nms_topk=(rpn.PRE_NMS_TOPK_TRAIN, rpn.PRE_NMS_TOPK_TEST),
            post_nms_topk=(rpn.POST_NMS_TOPK_TRAIN, rpn.POST_NMS_TOPK_TEST),
            nms_thresh=(rpn.NMS_THRESH, rpn.NMS_THRESH_TEST),
            apply_nms=rpn.APPLY_NMS,
            min_box_size=cfg.MODEL.PROPOSAL_GENERATOR.MIN_SIZE,
            loc_loss_weight=rpn.BBOX_REG_LOSS_WEIGHT,
            ctr_loss_weight=rpn.CTR_REG_LOSS_WEIGHT,
        )

    # ---- training targets -------------------------------------------------------------------
    @torch.no_grad()
    def label_anchors(self, anchors: torch.Tensor,
                      gt_boxes: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """anchors A x 4, gt_boxes G x 4 -> (reg_labels A, reg_matched_gt A x 4, ctr_labels A, ctr_targets A).

        Labels are after sampling: 1 positive, 0 negative, -1 ignored (not sampled)."""
        if gt_boxes.numel() == 0:
            zeros = torch.zeros_like(anchors)
            reg_labels = sample_binary_labels(torch.zeros(len(anchors), dtype=torch.int8, device=anchors.device),
                                              self.batch_size_per_image, self.positive_fraction)
            ctr_labels = sample_binary_labels(torch.zeros(len(anchors), dtype=torch.int8, device=anchors.device),
                                              self.batch_size_per_image, self.ctr_positive_fraction)
            return reg_labels, zeros, ctr_labels, torch.zeros(len(anchors), device=anchors.device)
        iou = box_iou(gt_boxes, anchors)
        reg_idx, reg_labels = self.reg_matcher(iou)
        reg_labels = sample_binary_labels(reg_labels, self.batch_size_per_image, self.positive_fraction)
        ctr_idx, ctr_labels = self.ctr_matcher(iou)
        ctr_labels = sample_binary_labels(ctr_labels, self.batch_size_per_image, self.ctr_positive_fraction)
        ctr_targets = centerness_targets(anchors, gt_boxes[ctr_idx])
        ctr_targets = torch.where(ctr_labels == 1, ctr_targets, torch.zeros_like(ctr_targets))
        return reg_labels, gt_boxes[reg_idx], ctr_labels, ctr_targets

    def losses(self, anchors: torch.Tensor, ctr_logits: torch.Tensor, deltas: torch.Tensor,
               gt_boxes_list: List[torch.Tensor]) -> Dict[str, torch.Tensor]:
        """anchors A x 4; ctr_logits N x A; deltas N x A x 4; gt per image."""
        num_images = ctr_logits.shape[0]
        loc_sum = ctr_logits.new_zeros(())
        ctr_sum = ctr_logits.new_zeros(())
        for i in range(num_images):
            reg_labels, matched_gt, ctr_labels, ctr_targets = self.label_anchors(anchors, gt_boxes_list[i])
            pos = reg_labels == 1
            pred_boxes = self.box2box.apply_deltas(deltas[i][pos], anchors[pos])
            loc_sum = loc_sum + iou_loss(pred_boxes, matched_gt[pos])
            valid = ctr_labels >= 0
            pred_ctr = torch.sigmoid(ctr_logits[i][valid])
            ctr_sum = ctr_sum + F.l1_loss(pred_ctr, ctr_targets[valid], reduction="sum")
        normaliser = float(self.batch_size_per_image * num_images)
        return {
            "loss_rpn_loc": loc_sum / normaliser * self.loc_loss_weight,
            "loss_rpn_ctr": ctr_sum / normaliser * self.ctr_loss_weight,
        }

    # ---- proposals --------------------------------------------------------------------------
    @torch.no_grad()
    def select_proposals(self, anchors_per_level: List[torch.Tensor], ctr_per_level: List[torch.Tensor],
                         deltas_per_level: List[torch.Tensor], image_sizes: List[Tuple[int, int]]) -> List[Proposals]:
        """Per level top-k by sigmoid centerness, decode, clip, drop empty; optional NMS (off = faithful).

        anchors_per_level: per level A_l x 4; ctr_per_level: per level N x A_l logits; deltas_per_level: per
        level N x A_l x 4. Returns one `Proposals` per image."""
        training = self.training
        topk = self.pre_nms_topk[training]
        results = []
        for i, (h, w) in enumerate(image_sizes):
            boxes_all, scores_all, levels_all = [], [], []
            for lvl, (anchors, ctr, deltas) in enumerate(zip(anchors_per_level, ctr_per_level, deltas_per_level)):
                scores = torch.sigmoid(ctr[i])
                k = min(topk, scores.numel())
                top_scores, top_idx = scores.topk(k)
                boxes_all.append(self.box2box.apply_deltas(deltas[i][top_idx], anchors[top_idx]))
                scores_all.append(top_scores)
                levels_all.append(torch.full((k,), lvl, dtype=torch.int64, device=scores.device))
            boxes = torch.cat(boxes_all)
            scores = torch.cat(scores_all)
            levels = torch.cat(levels_all)
            finite = torch.isfinite(boxes).all(dim=1) & torch.isfinite(scores)
            if training and not finite.all():
                raise FloatingPointError("Predicted RPN boxes or centerness are not finite (training has diverged)")
            # Clipping is per box, so clip all, then select once by index: one host sync (the count) at inference
            # instead of one per filter and per tensor masked. Non-finite boxes are dropped even where the clip
            # made them finite (clamp(inf) = the image edge).
            boxes = clip_boxes(boxes, h, w)
            keep = torch.nonzero(finite & nonempty(boxes, self.min_box_size), as_tuple=True)[0]
            boxes, scores, levels = boxes[keep], scores[keep], levels[keep]
            if self.apply_nms:
                # Our switch (the authors commented these lines out): per-level NMS, then top-k overall.
                keep = batched_nms(boxes, scores, levels, self.nms_thresh[training])
                keep = keep[: self.post_nms_topk[training]]
                boxes, scores = boxes[keep], scores[keep]
            results.append(Proposals(boxes=boxes, centerness=scores))
        return results

    def forward(self, image_sizes: List[Tuple[int, int]], features: Dict[str, torch.Tensor],
                gt_boxes: Optional[List[torch.Tensor]] = None) -> Tuple[List[Proposals], Dict[str, torch.Tensor]]:
        """
        Args:
            image_sizes: (height, width) of each image before padding.
            features: FPN maps by name (N x C x H_l x W_l).
            gt_boxes: per image G_i x 4 ground-truth boxes; needed in training mode only.

        Returns:
            one `Proposals` per image, and the weighted losses (empty at inference).
        """
        feats = [features[name] for name in self.in_features]
        anchors_per_level = self.anchor_generator(feats)
        ctr_logits, deltas = self.head(feats)
        n = feats[0].shape[0]
        # N x A x H x W -> N x (H*W*A); N x 4A x H x W -> N x (H*W*A) x 4 (detectron2 order).
        ctr_flat = [c.permute(0, 2, 3, 1).reshape(n, -1) for c in ctr_logits]
        deltas_flat = [
            d.view(n, -1, 4, d.shape[-2], d.shape[-1]).permute(0, 3, 4, 1, 2).reshape(n, -1, 4) for d in deltas
        ]
        proposals = self.select_proposals(anchors_per_level, ctr_flat, deltas_flat, image_sizes)
        losses: Dict[str, torch.Tensor] = {}
        if self.training:
            if gt_boxes is None:
                raise ValueError("CFRPN in training mode needs ground-truth boxes")
            losses = self.losses(torch.cat(anchors_per_level), torch.cat(ctr_flat, dim=1),
                                 torch.cat(deltas_flat, dim=1), gt_boxes)
        return proposals, losses
