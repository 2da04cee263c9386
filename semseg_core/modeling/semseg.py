"""SemSeg meta-architecture (detectron2 GeneralizedRCNN shape): preprocessing, backbone + FPN,
classification-free RPN, open-set ROI heads with the class-semantics-modulated mask head."""
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from torch.nn import functional as F

from ..config import CfgNode
from .backbone import build_backbone
from .cf_rpn import CFRPN
from .postprocess import rescale_detections
from .roi_heads import OpenSetROIHeads

LOSS_KEYS = ("loss_rpn_loc", "loss_rpn_ctr", "loss_box_reg", "loss_iou", "loss_dml", "loss_cls", "loss_mask")


class SemSeg(nn.Module):
    """Input: list of dicts (CONTRACTS.md "Model input"). Train mode -> dict of the weighted losses;
    eval mode -> list of per-image dicts (boxes in original-image coordinates, unknowns first)."""

    def __init__(self, *, backbone: nn.Module, rpn: CFRPN, roi_heads: OpenSetROIHeads,
                 pixel_mean: Sequence[float], pixel_std: Sequence[float], size_divisibility: int = 32):
        """
        Args:
            backbone: image batch -> FPN maps by name; has `out_channels`.
            rpn: classification-free RPN.
            roi_heads: open-set ROI heads.
            pixel_mean: per-channel mean subtracted from the RGB image (MODEL.PIXEL_MEAN).
            pixel_std: per-channel divisor (MODEL.PIXEL_STD).
            size_divisibility: the padded batch is a multiple of this in height and width.
        """
        super().__init__()
        self.backbone = backbone
        self.rpn = rpn
        self.roi_heads = roi_heads
        if len(pixel_mean) != 3 or len(pixel_std) != 3:
            raise ValueError("PIXEL_MEAN and PIXEL_STD need 3 values each")
        if any(s <= 0 for s in pixel_std):
            raise ValueError(f"PIXEL_STD must be positive, got {list(pixel_std)}")
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(3, 1, 1), persistent=False)
        self.size_divisibility = int(size_divisibility)

    @classmethod
    def from_config(cls, cfg: CfgNode, backbone: Optional[nn.Module] = None) -> "SemSeg":
        if backbone is None:
            backbone = build_backbone(cfg)
        channels = backbone.out_channels
        return cls(backbone=backbone, rpn=CFRPN.from_config(cfg, channels),
                   roi_heads=OpenSetROIHeads.from_config(cfg, channels), pixel_mean=cfg.MODEL.PIXEL_MEAN,
                   pixel_std=cfg.MODEL.PIXEL_STD, size_divisibility=getattr(backbone, "size_divisibility", 32))

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def preprocess(self, batched_inputs: List[Dict]) -> Tuple[torch.Tensor, List[Tuple[int, int]]]:
        """uint8 CHW images -> normalised float batch zero-padded (after normalisation) to a multiple of
        size_divisibility, plus the unpadded (h, w) of each image."""
        if not isinstance(batched_inputs, (list, tuple)) or not batched_inputs:
            raise ValueError("SemSeg expects a non-empty list of input dicts")
        images = []
        for i, item in enumerate(batched_inputs):
            img = item.get("image") if isinstance(item, dict) else None
            if not isinstance(img, torch.Tensor) or img.dim() != 3 or img.shape[0] != 3:
                raise ValueError(f"input {i}: 'image' must be a 3 x H x W tensor, got "
                                 f"{getattr(img, 'shape', type(img).__name__)}")
            if img.dtype != torch.uint8:
                raise ValueError(f"input {i}: 'image' must be uint8, got {img.dtype}")
            if img.shape[1] == 0 or img.shape[2] == 0:
                raise ValueError(f"input {i}: empty image {tuple(img.shape)}")
            images.append((img.to(self.device).float() - self.pixel_mean) / self.pixel_std)
        sizes = [(int(x.shape[1]), int(x.shape[2])) for x in images]
        d = max(1, self.size_divisibility)
        max_h = -(-max(h for h, _ in sizes) // d) * d
        max_w = -(-max(w for _, w in sizes) // d) * d
        batch = torch.stack([F.pad(x, (0, max_w - x.shape[2], 0, max_h - x.shape[1]), value=0.0) for x in images])
        return batch, sizes

    def _targets(self, batched_inputs: List[Dict],
                 sizes: List[Tuple[int, int]]) -> List[Dict[str, torch.Tensor]]:
        targets = []
        for i, (item, (h, w)) in enumerate(zip(batched_inputs, sizes)):
            inst = item.get("instances")
            if inst is None:
                raise ValueError(f"input {i}: training needs 'instances' (boxes, classes, masks)")
            boxes = torch.as_tensor(inst["boxes"], dtype=torch.float32, device=self.device).reshape(-1, 4)
            classes = torch.as_tensor(inst["classes"], dtype=torch.int64, device=self.device).reshape(-1)
            if len(classes) != len(boxes):
                raise ValueError(f"input {i}: {len(boxes)} boxes but {len(classes)} classes")
            k = self.roi_heads.num_classes
            if len(classes) and (classes.min() < 0 or classes.max() >= k):
                raise ValueError(f"input {i}: training classes must be known-class indices 0..{k - 1}, "
                                 f"got {classes.tolist()}")
            target = {"boxes": boxes, "classes": classes}
            if self.roi_heads.mask_on and "polygons" in inst:  # INPUT.MASK_FORMAT "polygon"
                if len(inst["polygons"]) != len(boxes):
                    raise ValueError(f"input {i}: {len(inst['polygons'])} polygon lists for {len(boxes)} boxes")
                target["polygons"] = list(inst["polygons"])
            elif self.roi_heads.mask_on:
                if "masks" not in inst:
                    raise ValueError(f"input {i}: MASK_ON training needs instance 'masks' (or 'polygons')")
                masks = torch.as_tensor(inst["masks"], device=self.device)
                if masks.shape != (len(boxes), h, w):
                    raise ValueError(f"input {i}: masks must be N x H x W = {(len(boxes), h, w)}, "
                                     f"got {tuple(masks.shape)}")
                target["masks"] = masks
            targets.append(target)
        return targets

    def forward(self, batched_inputs: List[Dict]) -> Union[Dict[str, torch.Tensor], List[Dict[str, torch.Tensor]]]:
        images, sizes = self.preprocess(batched_inputs)
        targets = self._targets(batched_inputs, sizes) if self.training else None  # validate before the work
        features = self.backbone(images)
        if self.training:
            proposals, losses = self.rpn(sizes, features, [t["boxes"] for t in targets])
            losses.update(self.roi_heads(features, proposals, sizes, targets))
            return losses
        proposals, _ = self.rpn(sizes, features)
        results = self.roi_heads(features, proposals, sizes)
        outputs = []
        for item, result, size in zip(batched_inputs, results, sizes):
            original = (int(item.get("height", size[0])), int(item.get("width", size[1])))
            outputs.append(rescale_detections(result, size, original))
        return outputs
