"""Multi-level ROIAlign with detectron2 semantics (ROIAlignV2: aligned=True, adaptive sampling).

torchvision's MultiScaleRoIAlign always uses aligned=False, hence this small pooler.
"""
import math
from typing import List, Sequence

import torch
from torch import nn
from torchvision.ops import roi_align


def assign_boxes_to_levels(boxes: torch.Tensor, min_level: int, max_level: int,
                           canonical_box_size: float = 224.0, canonical_level: int = 4) -> torch.Tensor:
    """floor(canonical_level + log2(sqrt(area) / canonical_size + 1e-8)) clamped, minus min_level."""
    sizes = torch.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    levels = torch.floor(canonical_level + torch.log2(sizes / canonical_box_size + 1e-8))
    return (torch.clamp(levels, min=min_level, max=max_level) - min_level).to(torch.int64)


class ROIPooler(nn.Module):
    """ROIAlign of each box on the FPN level its size selects."""

    def __init__(self, *, output_size: int, strides: Sequence[int], sampling_ratio: int = 0, aligned: bool = True,
                 canonical_box_size: float = 224.0, canonical_level: int = 4):
        """
        Args:
            output_size: side S of the pooled S x S features (POOLER_RESOLUTION).
            strides: stride of each feature level, finest first (consecutive powers of two).
            sampling_ratio: ROIAlign samples per bin (0 = adaptive; POOLER_SAMPLING_RATIO).
            aligned: half-pixel shift (True = ROIAlignV2, POOLER_TYPE).
            canonical_box_size: a box of this side goes to `canonical_level`.
            canonical_level: FPN level of a canonical-size box (4 = p4, as in detectron2).
        """
        super().__init__()
        levels = [int(round(math.log2(s))) for s in strides]
        if any(2 ** lvl != s for lvl, s in zip(levels, strides)) or levels != list(range(levels[0], levels[-1] + 1)):
            raise ValueError(f"pooler strides must be consecutive powers of two, got {list(strides)}")
        self.output_size = (output_size, output_size)
        self.scales = [1.0 / s for s in strides]
        self.min_level, self.max_level = levels[0], levels[-1]
        self.sampling_ratio = sampling_ratio
        self.aligned = aligned
        self.canonical_box_size = canonical_box_size
        self.canonical_level = canonical_level

    def forward(self, features: List[torch.Tensor], boxes_per_image: List[torch.Tensor]) -> torch.Tensor:
        """features: per level N x C x H x W; boxes_per_image: per image K_i x 4 -> (sum K_i) x C x S x S."""
        if len(features) != len(self.scales):
            raise ValueError(f"pooler expects {len(self.scales)} feature levels, got {len(features)}")
        rois = torch.cat([
            torch.cat([torch.full((len(b), 1), i, dtype=b.dtype, device=b.device), b], dim=1)
            for i, b in enumerate(boxes_per_image)
        ])
        channels = features[0].shape[1]
        out = features[0].new_zeros((len(rois), channels) + self.output_size)
        if len(rois) == 0:
            return out
        rois = rois.to(features[0].dtype)
        levels = assign_boxes_to_levels(rois[:, 1:], self.min_level, self.max_level,
                                        self.canonical_box_size, self.canonical_level)
        # ROIs grouped by level in index order (stable sort), split by the level sizes: one host sync (the sizes)
        # for all levels instead of a `nonzero` per level.
        order = torch.argsort(levels, stable=True)
        sizes = torch.bincount(levels, minlength=len(features)).tolist()
        for feature, scale, idx in zip(features, self.scales, order.split(sizes)):
            if len(idx) == 0:
                continue
            out[idx] = roi_align(feature, rois[idx], self.output_size, spatial_scale=scale,
                                 sampling_ratio=self.sampling_ratio, aligned=self.aligned)
        return out
