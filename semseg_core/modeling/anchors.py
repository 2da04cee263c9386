"""One square anchor per feature-map location (detectron2 DefaultAnchorGenerator semantics)."""
from typing import List, Sequence

import torch
from torch import nn


class AnchorGenerator(nn.Module):
    """Anchors of side `sizes[i]` centred at (x * stride, y * stride) (+ offset * stride) on level i.

    Flattening order per level is (H, W, A) row-major, A = number of aspect ratios (1 for SemSeg).
    """

    def __init__(self, *, sizes: Sequence[float], strides: Sequence[int], aspect_ratios: Sequence[float] = (1.0,),
                 offset: float = 0.0):
        """
        Args:
            sizes: anchor side per level (MODEL.ANCHOR_GENERATOR.SIZES).
            strides: stride per level.
            aspect_ratios: height / width of the anchors at every location (MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS).
            offset: anchor centre offset in strides, in [0, 1) (MODEL.ANCHOR_GENERATOR.OFFSET).
        """
        super().__init__()
        if len(sizes) != len(strides):
            raise ValueError(f"one anchor size per level expected: sizes {list(sizes)} vs strides {list(strides)}")
        if not 0.0 <= offset < 1.0:
            raise ValueError(f"anchor offset must be in [0, 1), got {offset}")
        self.strides = [int(s) for s in strides]
        self.offset = float(offset)
        cells = []
        for size in sizes:
            rows = []
            for ratio in aspect_ratios:
                w = (float(size) ** 2 / ratio) ** 0.5
                h = ratio * w
                rows.append([-w / 2.0, -h / 2.0, w / 2.0, h / 2.0])
            cells.append(torch.tensor(rows, dtype=torch.float32))
        self.cell_anchors = cells  # plain tensors: not part of the state dict (as in detectron2)

    @property
    def num_anchors_per_location(self) -> int:
        return self.cell_anchors[0].shape[0]

    def forward(self, features: List[torch.Tensor]) -> List[torch.Tensor]:
        """features: list of N x C x H_i x W_i -> list of (H_i * W_i * A) x 4 anchors."""
        out = []
        for feature, stride, cell in zip(features, self.strides, self.cell_anchors):
            h, w = feature.shape[-2:]
            device = feature.device
            xs = torch.arange(w, dtype=torch.float32, device=device) * stride + self.offset * stride
            ys = torch.arange(h, dtype=torch.float32, device=device) * stride + self.offset * stride
            sy, sx = torch.meshgrid(ys, xs, indexing="ij")
            sx, sy = sx.reshape(-1), sy.reshape(-1)
            shifts = torch.stack((sx, sy, sx, sy), dim=1)
            out.append((shifts[:, None, :] + cell.to(device)[None, :, :]).reshape(-1, 4))
        return out
