"""Known-class softmax classifier on the embedding decoder output (the authors' `SoftMaxClassifier`)
and the known/unknown post-processing of METHOD.md 1.6."""
from typing import Dict, Tuple

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.ops import batched_nms, nms

from ..config import CfgNode


class SoftmaxClassifier(nn.Module):
    """Linear layer to K known classes + background; splits detections into the unknown and known sets."""

    def __init__(self, *, in_dim: int, num_classes: int, loss_weight: float = 1.0,
                 known_score_thresh: float = 0.05, known_nms_thresh: float = 0.5, known_topk: int = 50,
                 unknown_score_thresh: float = 0.05, unknown_nms_thresh: float = 0.5, unknown_topk: int = 50):
        """
        Args:
            in_dim: width of the embedding decoder output (the box feature width).
            num_classes: known classes K (MODEL.ROI_HEADS.NUM_KNOWN_CLASSES); logit K is background.
            loss_weight: weight of the cross-entropy (MODEL.SOFTMAXCLS.LOSS_WEIGHT).
            known_score_thresh: a known detection needs class probability > this.
            known_nms_thresh: per-class NMS IoU threshold of the known set.
            known_topk: known detections kept per image.
            unknown_score_thresh: an unknown detection needs objectness > this.
            unknown_nms_thresh: class-agnostic NMS IoU threshold of the unknown set.
            unknown_topk: unknown detections kept per image.
        """
        super().__init__()
        self.cls_score = nn.Linear(in_dim, num_classes + 1)  # last column = background
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.constant_(self.cls_score.bias, 0.0)
        self.num_classes = num_classes
        self.loss_weight = loss_weight
        self.known_score_thresh = known_score_thresh
        self.known_nms_thresh = known_nms_thresh
        self.known_topk = known_topk
        self.unknown_score_thresh = unknown_score_thresh
        self.unknown_nms_thresh = unknown_nms_thresh
        self.unknown_topk = unknown_topk

    @classmethod
    def from_config(cls, cfg: CfgNode, in_dim: int) -> "SoftmaxClassifier":
        s = cfg.MODEL.SOFTMAXCLS
        return cls(in_dim=in_dim, num_classes=cfg.MODEL.ROI_HEADS.NUM_KNOWN_CLASSES, loss_weight=s.LOSS_WEIGHT,
                   known_score_thresh=s.KNOWN_SCORE_THRESH, known_nms_thresh=s.KNOWN_NMS_THRESH,
                   known_topk=s.KNOWN_TOPK, unknown_score_thresh=s.UNKNOWN_SCORE_THRESH,
                   unknown_nms_thresh=s.UNKNOWN_NMS_THRESH, unknown_topk=s.UNKNOWN_TOPK)

    def forward(self, decoded: torch.Tensor) -> torch.Tensor:
        return self.cls_score(decoded)

    def known_probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """R x K softmax probabilities of the known classes (the background column dropped)."""
        return F.softmax(logits, dim=-1)[:, : self.num_classes]

    def loss(self, logits: torch.Tensor, gt_classes: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Cross-entropy over all sampled ROIs (background = num_classes), mean reduction."""
        if logits.numel() == 0:
            return {"loss_cls": logits.sum() * 0.0}
        return {"loss_cls": F.cross_entropy(logits, gt_classes, reduction="mean") * self.loss_weight}

    def select(self, boxes: torch.Tensor, objectness: torch.Tensor, logits: torch.Tensor,
               unknown: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Split first-stage detections into the final unknown and known sets.

        boxes R x 4, objectness R (sqrt(iou * ctr)), logits R x (K+1), unknown R bool.
        Returns (row index into the inputs, score, known class or -1 for unknown, is_unknown), ordered
        unknowns first (by objectness), then knowns (by class probability); no NMS across the sets.
        """
        device = boxes.device
        # Unknown set: scored by objectness, class-agnostic NMS, top-k.
        unk_rows = torch.nonzero(unknown & (objectness > self.unknown_score_thresh), as_tuple=True)[0]
        keep = nms(boxes[unk_rows], objectness[unk_rows], self.unknown_nms_thresh)[: self.unknown_topk]
        unk_rows = unk_rows[keep]
        unk_scores = objectness[unk_rows]
        # Known set: class probability only (not multiplied by objectness); per-class NMS; top-k.
        probs = self.known_probabilities(logits)
        candidate = (~unknown)[:, None] & (probs > self.known_score_thresh)
        rows, classes = torch.nonzero(candidate, as_tuple=True)
        scores = probs[rows, classes]
        keep = batched_nms(boxes[rows], scores, classes, self.known_nms_thresh)[: self.known_topk]
        rows, classes, scores = rows[keep], classes[keep], scores[keep]
        out_rows = torch.cat([unk_rows, rows])
        out_scores = torch.cat([unk_scores, scores])
        out_classes = torch.cat([torch.full_like(unk_rows, -1), classes])
        is_unknown = torch.cat([torch.ones(len(unk_rows), dtype=torch.bool, device=device),
                                torch.zeros(len(rows), dtype=torch.bool, device=device)])
        return out_rows, out_scores, out_classes, is_unknown
