"""Open-set ROI heads (the authors' `OpensetROIHeads`): proposal sampling, 2xFC box head,
class-agnostic box regression + IoU branch, class-semantics embedding, softmax classifier,
modulated mask head, and the two-stage inference of METHOD.md 1.6."""
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.ops import batched_nms, box_iou

from ..config import CfgNode
from ..constants import UNKNOWN_ID
from .box_regression import Box2BoxTransform, clip_boxes
from .cf_rpn import Proposals
from .classifier import SoftmaxClassifier
from .matcher import Matcher, subsample_labels
from .modulated_mask_head import ModulatedMaskHead
from .poolers import ROIPooler
from .prototypes import PrototypeEmbedding


class BoxHead(nn.Module):
    """Flatten, then fc1 + ReLU, fc2 + ReLU (FastRCNNConvFCHead with 0 convs, 2 FCs)."""

    def __init__(self, *, in_channels: int, resolution: int, fc_dim: int = 1024, num_fc: int = 2):
        """
        Args:
            in_channels: channels of the pooled ROI features (the FPN width).
            resolution: side of the pooled ROI features (MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION).
            fc_dim: width of every FC layer (MODEL.ROI_BOX_HEAD.FC_DIM).
            num_fc: number of FC + ReLU layers (MODEL.ROI_BOX_HEAD.NUM_FC).
        """
        super().__init__()
        if num_fc < 1:
            raise ValueError("the box head needs at least one FC layer (MODEL.ROI_BOX_HEAD.NUM_FC)")
        self.num_fc = num_fc
        dim = in_channels * resolution * resolution
        for i in range(1, num_fc + 1):
            fc = nn.Linear(dim, fc_dim)
            nn.init.kaiming_uniform_(fc.weight, a=1)  # detectron2 c2_xavier_fill
            nn.init.constant_(fc.bias, 0.0)
            setattr(self, f"fc{i}", fc)
            dim = fc_dim
        self.out_dim = fc_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        for i in range(1, self.num_fc + 1):
            x = F.relu(getattr(self, f"fc{i}")(x))
        return x


class BoxPredictor(nn.Module):
    """Class-agnostic box deltas (4) and an IoU logit (1) from the box feature."""

    def __init__(self, *, in_dim: int):
        """
        Args:
            in_dim: width of the box feature (the box head's `out_dim`).
        """
        super().__init__()
        self.bbox_pred = nn.Linear(in_dim, 4)
        self.iou_pred = nn.Linear(in_dim, 1)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.normal_(self.iou_pred.weight, std=0.01)
        nn.init.constant_(self.bbox_pred.bias, 0.0)
        nn.init.constant_(self.iou_pred.bias, 0.0)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """-> (box deltas R x 4, IoU logits R)."""
        return self.bbox_pred(x), self.iou_pred(x)[:, 0]


class OpenSetROIHeads(nn.Module):
    """Sampling, box/IoU/embedding/classification/mask losses in training; two-stage open-set inference."""

    def __init__(self, *, box_pooler: ROIPooler, box_head: BoxHead, box_predictor: BoxPredictor,
                 embedding: PrototypeEmbedding, classifier: SoftmaxClassifier,
                 mask_pooler: Optional[ROIPooler] = None, mask_head: Optional[ModulatedMaskHead] = None,
                 in_features: Sequence[str] = ("p2", "p3", "p4", "p5"), iou_thresholds: Sequence[float] = (0.5,),
                 iou_labels: Sequence[int] = (0, 1), batch_size_per_image: int = 512,
                 positive_fraction: float = 0.25, proposal_append_gt: bool = True,
                 bbox_reg_weights: Sequence[float] = (10.0, 10.0, 5.0, 5.0), smooth_l1_beta: float = 0.0,
                 box_reg_loss_weight: float = 2.0, iou_loss_weight: float = 1.0,
                 obj_score_thresh: float = 0.05, first_stage_nms_thresh: float = 1.0,
                 detections_per_image: int = 1000, mean_type: str = "geometric"):
        """
        Args:
            box_pooler: ROIAlign of the proposals for the box head.
            box_head: pooled ROI features -> box feature.
            box_predictor: box feature -> class-agnostic deltas and IoU logit.
            embedding: box feature -> class-semantics embedding (prototypes, unknown distance).
            classifier: decoded embedding -> known-class logits; the known/unknown selection.
            mask_pooler: ROIAlign of the detections for the mask head (None: no masks).
            mask_head: embedding-modulated mask head (together with `mask_pooler`).
            in_features: feature-map names the heads pool from (MODEL.ROI_HEADS.IN_FEATURES).
            iou_thresholds: proposal labelling against the ground truth (MODEL.ROI_HEADS.IOU_THRESHOLDS).
            iou_labels: labels of the bands between the thresholds (MODEL.ROI_HEADS.IOU_LABELS).
            batch_size_per_image: ROIs sampled per image (MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE).
            positive_fraction: largest share of foreground ROIs in the sample.
            proposal_append_gt: add the ground-truth boxes to the proposals in training.
            bbox_reg_weights: (dx, dy, dw, dh) weights of the box encoding (MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS).
            smooth_l1_beta: 0 = L1 box loss, > 0 = smooth L1 with this beta.
            box_reg_loss_weight: weight of the box loss (MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_WEIGHT).
            iou_loss_weight: weight of the IoU-branch loss (MODEL.ROI_BOX_HEAD.IOU_REG_LOSS_WEIGHT).
            obj_score_thresh: first-stage objectness threshold at inference (MODEL.ROI_HEADS.OBJ_SCORE_THRESH_TEST).
            first_stage_nms_thresh: first-stage class-agnostic NMS (1.0 = none, faithful; MODEL.ROI_HEADS.NMS_THRESH_TEST).
            detections_per_image: first-stage detections kept (TEST.DETECTIONS_PER_IMAGE).
            mean_type: objectness = "geometric" sqrt(iou * ctr) (faithful) or "arithmetic" (iou + ctr) / 2.
        """
        super().__init__()
        if (mask_pooler is None) != (mask_head is None):
            raise ValueError("mask_pooler and mask_head go together")
        if mean_type not in ("geometric", "arithmetic"):
            raise ValueError(f"mean_type must be 'geometric' or 'arithmetic', got {mean_type!r}")
        self.box_pooler = box_pooler
        self.box_head = box_head
        self.box_predictor = box_predictor
        self.embedding = embedding
        self.classifier = classifier
        self.mask_pooler = mask_pooler
        self.mask_head = mask_head
        self.in_features = list(in_features)
        self.num_classes = embedding.num_classes
        self.proposal_matcher = Matcher(thresholds=iou_thresholds, labels=iou_labels, allow_low_quality_matches=False)
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = positive_fraction
        self.proposal_append_gt = proposal_append_gt
        self.box2box = Box2BoxTransform(weights=bbox_reg_weights)
        self.smooth_l1_beta = smooth_l1_beta
        self.box_reg_loss_weight = box_reg_loss_weight
        self.iou_loss_weight = iou_loss_weight
        self.obj_score_thresh = obj_score_thresh
        self.first_stage_nms_thresh = first_stage_nms_thresh
        self.detections_per_image = detections_per_image
        self.mean_type = mean_type

    @property
    def mask_on(self) -> bool:
        return self.mask_head is not None

    @classmethod
    def from_config(cls, cfg: CfgNode, in_channels: int) -> "OpenSetROIHeads":
        rh, bh, mh = cfg.MODEL.ROI_HEADS, cfg.MODEL.ROI_BOX_HEAD, cfg.MODEL.ROI_MASK_HEAD
        for name, node in (("ROI_BOX_HEAD", bh), ("ROI_MASK_HEAD", mh)):
            if node.POOLER_TYPE not in ("ROIAlignV2", "ROIAlign"):
                raise ValueError(f"MODEL.{name}.POOLER_TYPE must be ROIAlignV2 or ROIAlign, got {node.POOLER_TYPE!r}")
        if not bh.CLS_AGNOSTIC_BBOX_REG or not mh.CLS_AGNOSTIC_MASK:
            raise ValueError("SemSeg box regression and masks are class-agnostic (CLS_AGNOSTIC_* must be true)")
        strides = [2 ** int(name[1:]) for name in rh.IN_FEATURES]
        box_head = BoxHead(in_channels=in_channels, resolution=bh.POOLER_RESOLUTION, fc_dim=bh.FC_DIM,
                           num_fc=bh.NUM_FC)
        mask_pooler = mask_head = None
        if cfg.MODEL.MASK_ON:
            mask_pooler = ROIPooler(output_size=mh.POOLER_RESOLUTION, strides=strides,
                                    sampling_ratio=mh.POOLER_SAMPLING_RATIO, aligned=mh.POOLER_TYPE == "ROIAlignV2")
            mask_head = ModulatedMaskHead.from_config(cfg, in_channels)
        return cls(
            box_pooler=ROIPooler(output_size=bh.POOLER_RESOLUTION, strides=strides,
                                 sampling_ratio=bh.POOLER_SAMPLING_RATIO, aligned=bh.POOLER_TYPE == "ROIAlignV2"),
            box_head=box_head,
            box_predictor=BoxPredictor(in_dim=box_head.out_dim),
            embedding=PrototypeEmbedding.from_config(cfg, box_head.out_dim),
            classifier=SoftmaxClassifier.from_config(cfg, box_head.out_dim),
            mask_pooler=mask_pooler,
            mask_head=mask_head,
            in_features=rh.IN_FEATURES,
            iou_thresholds=rh.IOU_THRESHOLDS,
            iou_labels=rh.IOU_LABELS,
            batch_size_per_image=rh.BATCH_SIZE_PER_IMAGE,
            positive_fraction=rh.POSITIVE_FRACTION,
            proposal_append_gt=rh.PROPOSAL_APPEND_GT,
            bbox_reg_weights=bh.BBOX_REG_WEIGHTS,
            smooth_l1_beta=bh.SMOOTH_L1_BETA,
            box_reg_loss_weight=bh.BBOX_REG_LOSS_WEIGHT,
            iou_loss_weight=bh.IOU_REG_LOSS_WEIGHT,
            obj_score_thresh=rh.OBJ_SCORE_THRESH_TEST,
            first_stage_nms_thresh=rh.NMS_THRESH_TEST,
            detections_per_image=cfg.TEST.DETECTIONS_PER_IMAGE,
        )

    # ---- training ---------------------------------------------------------------------------
    @torch.no_grad()
    def sample_proposals(self, proposal_boxes: torch.Tensor, gt_boxes: torch.Tensor,
                         gt_classes: torch.Tensor) -> Dict[str, torch.Tensor]:
        """-> dict of sampled ROIs (fg first): boxes, gt_classes (K = background), gt_boxes, gt_index, ious."""
        if self.proposal_append_gt and len(gt_boxes):
            proposal_boxes = torch.cat([proposal_boxes, gt_boxes.to(proposal_boxes.dtype)])
        bg = self.num_classes
        if len(gt_boxes):
            iou = box_iou(gt_boxes, proposal_boxes)
            matched_idx, labels = self.proposal_matcher(iou)
            ious = iou.max(dim=0).values
            classes = gt_classes[matched_idx].clone()
            classes[labels == 0] = bg
            classes[labels == -1] = -1
            matched_boxes = gt_boxes[matched_idx]
        else:
            matched_idx = torch.zeros(len(proposal_boxes), dtype=torch.int64, device=proposal_boxes.device)
            ious = proposal_boxes.new_zeros(len(proposal_boxes))
            classes = torch.full_like(matched_idx, bg)
            matched_boxes = torch.zeros_like(proposal_boxes)
        fg_idx, bg_idx = subsample_labels(classes, self.batch_size_per_image, self.positive_fraction, bg)
        idx = torch.cat([fg_idx, bg_idx])
        return {"boxes": proposal_boxes[idx], "gt_classes": classes[idx], "gt_boxes": matched_boxes[idx],
                "gt_index": matched_idx[idx], "ious": ious[idx]}

    def forward_train(self, features: List[torch.Tensor], proposals: List[Proposals],
                      targets: List[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
        samples = [self.sample_proposals(p.boxes, t["boxes"], t["classes"]) for p, t in zip(proposals, targets)]
        boxes = [s["boxes"] for s in samples]
        gt_classes = torch.cat([s["gt_classes"] for s in samples])
        gt_boxes = torch.cat([s["gt_boxes"] for s in samples])
        ious = torch.cat([s["ious"] for s in samples])
        rois = torch.cat(boxes)
        num_rois = max(1, len(rois))

        feats = self.box_head(self.box_pooler(features, boxes))
        deltas, iou_logits = self.box_predictor(feats)
        fg = (gt_classes >= 0) & (gt_classes < self.num_classes)
        target_deltas = self.box2box.get_deltas(rois[fg], gt_boxes[fg])
        if self.smooth_l1_beta > 0:
            reg = F.smooth_l1_loss(deltas[fg], target_deltas, beta=self.smooth_l1_beta, reduction="sum")
        else:
            reg = F.l1_loss(deltas[fg], target_deltas, reduction="sum")
        iou_l1 = F.l1_loss(torch.sigmoid(iou_logits[fg]), ious[fg], reduction="sum")
        losses = {
            "loss_box_reg": reg / num_rois * self.box_reg_loss_weight,
            "loss_iou": iou_l1 / num_rois * self.iou_loss_weight,
        }
        embeddings, decoded = self.embedding(feats)
        losses.update(self.embedding.loss(embeddings, gt_classes, ious, num_rois))
        losses.update(self.classifier.loss(self.classifier(decoded), gt_classes))
        if self.mask_on:
            fg_boxes, fg_masks = [], []
            for s, t in zip(samples, targets):
                keep = (s["gt_classes"] >= 0) & (s["gt_classes"] < self.num_classes)
                fg_boxes.append(s["boxes"][keep])
                matched = s["gt_index"][keep]
                fg_masks.append(t["masks"][matched] if "masks" in t
                                else [t["polygons"][j] for j in matched.tolist()])
            mask_logits = self.mask_head(self.mask_pooler(features, fg_boxes), embeddings[fg])
            losses.update(self.mask_head.loss(mask_logits, fg_boxes, fg_masks))
        return losses

    # ---- inference --------------------------------------------------------------------------
    @torch.no_grad()
    def forward_test(self, features: List[torch.Tensor], proposals: List[Proposals],
                     image_sizes: List[Tuple[int, int]]) -> List[Dict[str, torch.Tensor]]:
        boxes_in = [p.boxes for p in proposals]
        feats = self.box_head(self.box_pooler(features, boxes_in))
        deltas, iou_logits = self.box_predictor(feats)
        counts = [len(b) for b in boxes_in]
        results = []
        for p, f, d, il, (h, w) in zip(
                proposals, feats.split(counts), deltas.split(counts), iou_logits.split(counts), image_sizes):
            results.append(self._infer_image(p.boxes, p.centerness, f, d, il, h, w))
        if self.mask_on:
            pooled = self.mask_pooler(features, [r["boxes"] for r in results])
            emb = torch.cat([r["embeddings"] for r in results])
            probs = torch.sigmoid(self.mask_head(pooled, emb))
            for r, p in zip(results, probs.split([len(r["boxes"]) for r in results])):
                r["mask_probs"] = p
        return results

    def _infer_image(self, proposal_boxes: torch.Tensor, ctr: torch.Tensor, feats: torch.Tensor,
                     deltas: torch.Tensor, iou_logits: torch.Tensor, height: int,
                     width: int) -> Dict[str, torch.Tensor]:
        # Stage 1: refined class-agnostic boxes scored by objectness s = mean(iou_pred, centerness).
        boxes = clip_boxes(self.box2box.apply_deltas(deltas, proposal_boxes), height, width)
        iou = torch.sigmoid(iou_logits)
        scores = torch.sqrt(iou * ctr) if self.mean_type == "geometric" else (iou + ctr) / 2
        valid = torch.isfinite(boxes).all(dim=1) & torch.isfinite(scores) & (scores > self.obj_score_thresh)
        rows = torch.nonzero(valid, as_tuple=True)[0]
        if self.first_stage_nms_thresh < 1.0:
            order = batched_nms(boxes[rows], scores[rows], torch.zeros_like(rows), self.first_stage_nms_thresh)
        else:  # NMS at 1.0 suppresses nothing: it only sorts by score
            order = torch.argsort(scores[rows], descending=True, stable=True)
        rows = rows[order[: self.detections_per_image]]
        boxes, scores, feats = boxes[rows], scores[rows], feats[rows]
        # Stage 2: embedding distance decides unknown; the softmax decides the known class.
        embeddings, decoded = self.embedding(feats)
        d_min, _ = self.embedding.min_distance(embeddings)
        unknown = self.embedding.is_unknown(d_min)
        logits = self.classifier(decoded)
        keep, final_scores, classes, is_unknown = self.classifier.select(boxes, scores, logits, unknown)
        classes = torch.where(is_unknown, torch.full_like(classes, UNKNOWN_ID), classes)
        # objectness and class_probs (every row, known or unknown) let post-processing re-take the known/unknown
        # decision at another distance threshold and rank both sets by one comparable number.
        return {"boxes": boxes[keep], "scores": final_scores, "classes": classes.to(torch.int64),
                "unknown_scores": d_min[keep], "embeddings": embeddings[keep], "objectness": scores[keep],
                "class_probs": self.classifier.known_probabilities(logits[keep])}

    def forward(self, features: Dict[str, torch.Tensor], proposals: List[Proposals],
                image_sizes: List[Tuple[int, int]], targets: Optional[List[Dict[str, torch.Tensor]]] = None
                ) -> Union[Dict[str, torch.Tensor], List[Dict[str, torch.Tensor]]]:
        """
        Args:
            features: FPN maps by name (N x C x H_l x W_l).
            proposals: one `Proposals` per image (from the RPN).
            image_sizes: (height, width) of each image before padding.
            targets: per image {"boxes" G x 4, "classes" G, "masks" G x H x W}; training mode only.

        Returns:
            training: the weighted losses by name; inference: per image {"boxes", "scores", "classes",
            "unknown_scores", "embeddings"[, "mask_probs"]}, unknowns first.
        """
        feats = [features[name] for name in self.in_features]
        if self.training:
            if targets is None:
                raise ValueError("OpenSetROIHeads in training mode needs targets")
            return self.forward_train(feats, proposals, targets)
        return self.forward_test(feats, proposals, image_sizes)
