"""Detection post-processing: rescale boxes to the original image, paste 28x28 masks (detectron2 paste)."""
from typing import Dict

import torch
from torch.nn import functional as F

from .box_regression import clip_boxes, nonempty

# Upper bound on floats materialised per pasting chunk (keeps memory flat for big images).
_PASTE_BUDGET = 1 << 24


def rescale_detections(result: Dict[str, torch.Tensor], resized_hw, original_hw) -> Dict[str, torch.Tensor]:
    """Scale boxes from the resized (network input) size to the original size, clip, drop empty boxes
    and the matching rows of every other per-detection tensor."""
    rh, rw = resized_hw
    oh, ow = original_hw
    boxes = result["boxes"].clone()
    boxes[:, 0::2] *= ow / rw
    boxes[:, 1::2] *= oh / rh
    boxes = clip_boxes(boxes, oh, ow)
    # one index for every field: a boolean mask per field would cost one host sync (nonzero) each
    keep = torch.nonzero(nonempty(boxes)).squeeze(1)
    out = {k: v.index_select(0, keep) for k, v in result.items() if k != "boxes"}
    out["boxes"] = boxes.index_select(0, keep)
    return out


def paste_masks(mask_probs: torch.Tensor, boxes: torch.Tensor, height: int, width: int,
                threshold: float = 0.5) -> torch.Tensor:
    """Paste N x 1 x M x M (or N x M x M) mask probabilities into boxes of an H x W image.

    detectron2 semantics: each image pixel centre (x + 0.5, y + 0.5) is mapped into the box and
    sampled bilinearly from the mask (grid_sample, align_corners=False, zeros outside); the result
    is thresholded at >= threshold. Returns bool N x H x W.
    """
    if mask_probs.dim() == 4:
        if mask_probs.shape[1] != 1:
            raise ValueError(f"paste_masks expects one mask channel, got shape {tuple(mask_probs.shape)}")
        mask_probs = mask_probs[:, 0]
    if mask_probs.dim() != 3 or boxes.dim() != 2 or boxes.shape[-1] != 4 or len(boxes) != len(mask_probs):
        raise ValueError(f"paste_masks: masks {tuple(mask_probs.shape)} and boxes {tuple(boxes.shape)} do not match")
    n = len(mask_probs)
    out = torch.zeros((n, height, width), dtype=torch.bool, device=mask_probs.device)
    if n == 0 or height == 0 or width == 0:
        return out
    masks = mask_probs.float()[:, None]
    boxes = boxes.to(masks.dtype)
    chunk = max(1, min(n, _PASTE_BUDGET // max(1, 3 * height * width)))
    for start in range(0, n, chunk):
        m = masks[start:start + chunk]
        b = boxes[start:start + chunk]
        # Only the union of the boxes (+1 px) can pass the threshold: sample just that region.
        x0 = int(max(torch.floor(b[:, 0].min()).item() - 1, 0))
        y0 = int(max(torch.floor(b[:, 1].min()).item() - 1, 0))
        x1 = int(min(torch.ceil(b[:, 2].max()).item() + 1, width))
        y1 = int(min(torch.ceil(b[:, 3].max()).item() + 1, height))
        if x1 <= x0 or y1 <= y0:
            continue
        bx0, by0, bx1, by1 = (b[:, i:i + 1] for i in range(4))
        img_x = torch.arange(x0, x1, device=m.device, dtype=m.dtype) + 0.5
        img_y = torch.arange(y0, y1, device=m.device, dtype=m.dtype) + 0.5
        gx = (img_x[None, :] - bx0) / (bx1 - bx0) * 2 - 1  # k x W'
        gy = (img_y[None, :] - by0) / (by1 - by0) * 2 - 1  # k x H'
        k = len(m)
        grid = torch.stack((gx[:, None, :].expand(k, len(img_y), len(img_x)),
                            gy[:, :, None].expand(k, len(img_y), len(img_x))), dim=3)
        sampled = F.grid_sample(m, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        out[start:start + chunk, y0:y1, x0:x1] = sampled[:, 0] >= threshold
    return out


def label_image_from_masks(masks: torch.Tensor) -> torch.Tensor:
    """N x H x W bool masks, sorted by score (descending) -> H x W int32 label image on the same device:
    0 background, k + 1 where instance k is the first (highest-scoring) mask covering the pixel.

    Instance k is weighted N - k and the max is taken over instances: one vectorised pass (argmax over
    the instance dimension is ~6x slower on the CPU)."""
    n = masks.shape[0]
    if n == 0:
        return torch.zeros(masks.shape[1:], dtype=torch.int32, device=masks.device)
    dtype = torch.uint8 if n < 256 else torch.int32
    rank = torch.arange(n, 0, -1, dtype=dtype, device=masks.device).view(n, 1, 1)
    best = (masks.to(dtype) * rank).amax(dim=0).to(torch.int32)
    return torch.where(best > 0, (n + 1) - best, torch.zeros((), dtype=torch.int32, device=masks.device))
