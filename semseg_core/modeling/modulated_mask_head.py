"""Class-semantics-modulated mask head (the authors' `ClsSemModMaskHead`).

A conv tower turns 14x14 ROI features into a 28x28 map of MASK_EMB_DIM per-pixel embeddings; an MLP
turns each instance's unit-norm class-semantics embedding into a bias-free dynamic 1x1 kernel, whose
dot product with the map is the class-agnostic mask logit. The embedding is NOT detached: the mask
loss trains the embedding encoder (and the box head) too.
"""
from typing import Dict, List, Optional

import numpy as np
import torch
from pycocotools import mask as mask_utils
from torch import nn
from torch.nn import functional as F
from torchvision.ops import roi_align

from ..config import CfgNode


class ModulatedMaskHead(nn.Module):
    """Conv tower -> per-pixel mask embeddings; instance embedding -> dynamic 1x1 kernel; their dot product."""

    def __init__(self, *, in_channels: int, conv_dim: int = 256, num_conv: int = 4, mask_emb_dim: int = 128,
                 emd_dim: Optional[int] = None, loss_weight: float = 1.0):
        """
        Args:
            in_channels: channels of the pooled ROI features (the FPN width).
            conv_dim: width of the conv tower and the kernel MLP (MODEL.ROI_MASK_HEAD.CONV_DIM).
            num_conv: 3x3 conv + ReLU layers before the deconvolution (MODEL.ROI_MASK_HEAD.NUM_CONV).
            mask_emb_dim: per-pixel embedding width = dynamic kernel size (MODEL.ROI_MASK_HEAD.MASK_EMB_DIM).
            emd_dim: width of the class-semantics embedding (MODEL.DML.EMD_DIM); None = conv_dim.
            loss_weight: weight of the mask loss (MODEL.ROI_MASK_HEAD.LOSS_WEIGHT).
        """
        super().__init__()
        # The authors hard-wire the MLP input width to CONV_DIM (== EMD_DIM in their configs); we use
        # EMD_DIM so any size works, which is the same layer shape whenever the two are equal.
        emd_dim = conv_dim if emd_dim is None else emd_dim
        self.num_conv = num_conv
        channels = in_channels
        for i in range(1, num_conv + 1):
            setattr(self, f"mask_fcn{i}", nn.Conv2d(channels, conv_dim, 3, padding=1))
            channels = conv_dim
        self.deconv = nn.ConvTranspose2d(channels, conv_dim, 2, stride=2)
        self.post_conv = nn.Conv2d(conv_dim, mask_emb_dim, 3, padding=1)
        self.kernel_mlp = nn.Sequential(nn.Linear(emd_dim, conv_dim), nn.ReLU(inplace=True),
                                        nn.Linear(conv_dim, mask_emb_dim))
        for i in range(1, num_conv + 1):
            self._msra_fill(getattr(self, f"mask_fcn{i}"))
        self._msra_fill(self.deconv)
        self._msra_fill(self.post_conv)
        for layer in (self.kernel_mlp[0], self.kernel_mlp[2]):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.constant_(layer.bias, 0.0)
        self.loss_weight = loss_weight

    @staticmethod
    def _msra_fill(layer: nn.Module) -> None:
        nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
        nn.init.constant_(layer.bias, 0.0)

    @classmethod
    def from_config(cls, cfg: CfgNode, in_channels: int) -> "ModulatedMaskHead":
        m = cfg.MODEL.ROI_MASK_HEAD
        return cls(in_channels=in_channels, conv_dim=m.CONV_DIM, num_conv=m.NUM_CONV, mask_emb_dim=m.MASK_EMB_DIM,
                   emd_dim=cfg.MODEL.DML.EMD_DIM, loss_weight=m.LOSS_WEIGHT)

    def mask_features(self, x: torch.Tensor) -> torch.Tensor:
        """R x C x S x S pooled features -> R x MASK_EMB_DIM x 2S x 2S per-pixel embeddings."""
        for i in range(1, self.num_conv + 1):
            x = F.relu(getattr(self, f"mask_fcn{i}")(x))
        x = F.relu(self.deconv(x))
        return self.post_conv(x)  # no activation

    def kernels(self, embeddings: torch.Tensor) -> torch.Tensor:
        """R x EMD_DIM unit-norm embeddings -> R x MASK_EMB_DIM dynamic 1x1 kernels (no bias)."""
        return self.kernel_mlp(embeddings)

    def forward(self, pooled: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        """-> mask logits R x 1 x 2S x 2S."""
        if len(pooled) != len(embeddings):
            raise ValueError(f"{len(pooled)} pooled ROIs but {len(embeddings)} embeddings")
        feats = self.mask_features(pooled)
        return torch.einsum("rchw,rc->rhw", feats, self.kernels(embeddings))[:, None]

    def loss(self, mask_logits: torch.Tensor, boxes_per_image: List[torch.Tensor],
             gt_masks_per_image: List[torch.Tensor]) -> Dict[str, torch.Tensor]:
        """BCE-with-logits (mean over all pixels of all foreground ROIs) against the GT masks cut to each ROI box:
        bitmaps by aligned ROIAlign binarised at 0.5 (detectron2 BitMasks.crop_and_resize), polygons rasterised
        inside the box (PolygonMasks.crop_and_resize; INPUT.MASK_FORMAT "polygon").

        boxes_per_image: foreground ROI boxes; gt_masks_per_image: their matched GT masks, per image either a
        K_i x H x W bitmap tensor or a list of K_i polygon lists (flat float arrays in image pixels)."""
        size = mask_logits.shape[-1]
        targets = [rasterize_polygons_in_boxes(m, b, size) if isinstance(m, list) else crop_and_resize(m, b, size)
                   for m, b in zip(gt_masks_per_image, boxes_per_image) if len(b)]
        if mask_logits.numel() == 0 or not targets:
            return {"loss_mask": mask_logits.sum() * 0.0}
        targets = torch.cat(targets).to(mask_logits.dtype)
        loss = F.binary_cross_entropy_with_logits(mask_logits[:, 0], targets, reduction="mean")
        return {"loss_mask": loss * self.loss_weight}


def crop_and_resize(masks: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """K x H x W bitmaps (one per box), K x 4 boxes -> K x size x size bool, as detectron2 does."""
    if len(masks) != len(boxes):
        raise ValueError(f"{len(masks)} masks for {len(boxes)} boxes")
    rois = torch.cat([torch.arange(len(boxes), device=boxes.device, dtype=boxes.dtype)[:, None], boxes], dim=1)
    out = roi_align(masks[:, None].to(boxes.dtype), rois.to(boxes.dtype), (size, size), 1.0, 0, aligned=True)
    return out[:, 0] >= 0.5


def rasterize_polygons_in_boxes(polygons: List[List[np.ndarray]], boxes: torch.Tensor, size: int) -> torch.Tensor:
    """K polygon lists (one object each, image pixels), K x 4 boxes -> K x size x size bool, as detectron2's
    PolygonMasks.crop_and_resize: each polygon is moved to the box origin, scaled by size / box side (sides below
    0.1 px count as 0.1) and rasterised at size x size by pycocotools (all polygons of an object merged)."""
    if len(polygons) != len(boxes):
        raise ValueError(f"{len(polygons)} polygon lists for {len(boxes)} boxes")
    out = np.zeros((len(boxes), size, size), dtype=bool)
    for k, (object_polygons, box) in enumerate(zip(polygons, boxes.detach().cpu().double().numpy())):
        x0, y0, x1, y1 = box
        scale = np.array([size / max(x1 - x0, 0.1), size / max(y1 - y0, 0.1)])
        local = [((np.asarray(p, dtype=np.float64).reshape(-1, 2) - (x0, y0)) * scale).reshape(-1).tolist()
                 for p in object_polygons]
        if local:
            out[k] = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(local, size, size))).astype(bool)
    return torch.from_numpy(out).to(boxes.device)
