"""The seed's geometric augmentation: resize the shorter edge (capped by a max size) and a random flip.

One `ResizeFlip` is sampled per image and applied to the image, boxes, polygons and bitmasks alike, so they stay
aligned. Sampling uses only the `numpy.random.Generator` it is given (deterministic data order for resume).

Pixels are resized exactly as detectron2's `ResizeShortestEdge` / `ResizeTransform` do: the uint8 image with PIL
bilinear, bitmasks with PIL nearest. `resize_image_pil` is that one rule; the Predictor imports it too.
"""

from dataclasses import dataclass
from typing import List, Sequence, Tuple

import numpy as np
from PIL import Image


def resize_shortest_edge_size(h: int, w: int, short: int, max_size: int) -> Tuple[int, int]:
    """(new_h, new_w) with the shorter side = `short` unless the longer one would exceed `max_size`.

    detectron2's `ResizeShortestEdge.get_output_shape`, including its `int(x + 0.5)` rounding. `short` <= 0 keeps
    the size (MIN_SIZE_TEST = 0 disables resizing).
    """
    if short <= 0:
        return int(h), int(w)
    scale = short / min(h, w)
    new_h, new_w = (short, scale * w) if h < w else (scale * h, short)
    if max_size > 0 and max(new_h, new_w) > max_size:
        scale = max_size / max(new_h, new_w)
        new_h, new_w = new_h * scale, new_w * scale
    return int(new_h + 0.5), int(new_w + 0.5)


def resize_image_pil(image: np.ndarray, new_h: int, new_w: int, nearest: bool = False) -> np.ndarray:
    """H x W (x C) uint8 -> new_h x new_w (x C) uint8 with PIL bilinear (nearest for masks), as detectron2 does.

    detectron2's ResizeTransform.apply_image hands a uint8 array to `PIL.Image.fromarray(...).resize((w, h))`;
    a float resize (torch `interpolate`, cv2) differs from it by one grey level on ~4 % of the pixels.
    """
    if image.dtype != np.uint8:
        raise ValueError(f"PIL resize takes uint8 images, got {image.dtype}")
    if image.shape[:2] == (new_h, new_w):
        return image
    resample = Image.NEAREST if nearest else Image.BILINEAR
    return np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize((new_w, new_h), resample))


@dataclass(frozen=True)
class ResizeFlip:
    """Resize (h, w) -> (new_h, new_w), then optionally flip horizontally and/or vertically."""

    h: int
    w: int
    new_h: int
    new_w: int
    hflip: bool = False
    vflip: bool = False

    @property
    def scale_xy(self) -> Tuple[float, float]:
        return self.new_w / self.w, self.new_h / self.h

    def apply_image(self, image: np.ndarray) -> np.ndarray:
        """H x W x C uint8 image, PIL bilinear resize (detectron2's)."""
        if image.shape[:2] != (self.h, self.w):
            raise ValueError(f"image is {image.shape[1]}x{image.shape[0]}, transform expects {self.w}x{self.h}")
        out = resize_image_pil(image, self.new_h, self.new_w)
        return np.ascontiguousarray(self._flip(out, h_axis=0))

    def apply_masks(self, masks: np.ndarray) -> np.ndarray:
        """N x H x W uint8 bitmaps, PIL nearest resize (detectron2's apply_segmentation)."""
        out = np.zeros((len(masks), self.new_h, self.new_w), dtype=np.uint8)
        for i, m in enumerate(masks):
            out[i] = resize_image_pil(np.asarray(m, dtype=np.uint8), self.new_h, self.new_w, nearest=True)
        return np.ascontiguousarray(self._flip(out, h_axis=1))

    def apply_boxes(self, boxes: np.ndarray) -> np.ndarray:
        """N x 4 xyxy float boxes."""
        sx, sy = self.scale_xy
        out = np.asarray(boxes, dtype=np.float32).reshape(-1, 4) * np.array([sx, sy, sx, sy], dtype=np.float32)
        if self.hflip:
            out[:, [0, 2]] = self.new_w - out[:, [2, 0]]
        if self.vflip:
            out[:, [1, 3]] = self.new_h - out[:, [3, 1]]
        return out

    def apply_polygons(self, polygons: Sequence[Sequence[float]]) -> List[np.ndarray]:
        """Flat [x1, y1, x2, y2, ...] polygons in pixel coordinates (COCO convention)."""
        sx, sy = self.scale_xy
        out = []
        for poly in polygons:
            xy = np.asarray(poly, dtype=np.float64).reshape(-1, 2) * (sx, sy)
            if self.hflip:
                xy[:, 0] = self.new_w - xy[:, 0]
            if self.vflip:
                xy[:, 1] = self.new_h - xy[:, 1]
            out.append(xy.reshape(-1))
        return out

    def _flip(self, array: np.ndarray, h_axis: int) -> np.ndarray:
        if self.hflip:
            array = np.flip(array, axis=h_axis + 1)
        if self.vflip:
            array = np.flip(array, axis=h_axis)
        return array


def sample_train_transform(h: int, w: int, input_cfg, rng: np.random.Generator) -> ResizeFlip:
    """Training transform from `cfg.INPUT` (MIN_SIZE_TRAIN[_SAMPLING], MAX_SIZE_TRAIN, RANDOM_FLIP)."""
    sizes = input_cfg.MIN_SIZE_TRAIN
    sizes = [int(sizes)] if isinstance(sizes, (int, float)) else [int(s) for s in sizes]
    sampling = input_cfg.MIN_SIZE_TRAIN_SAMPLING
    if sampling == "choice":
        short = sizes[int(rng.integers(len(sizes)))]
    elif sampling == "range":
        if len(sizes) != 2:
            raise ValueError(f"INPUT.MIN_SIZE_TRAIN_SAMPLING 'range' needs two sizes (min, max), got {sizes}")
        short = int(rng.integers(sizes[0], sizes[1] + 1))
    else:
        raise ValueError(f"INPUT.MIN_SIZE_TRAIN_SAMPLING must be 'choice' or 'range', got {sampling!r}")
    new_h, new_w = resize_shortest_edge_size(h, w, short, int(input_cfg.MAX_SIZE_TRAIN))
    flip_mode = str(input_cfg.RANDOM_FLIP).lower()
    if flip_mode not in ("horizontal", "vertical", "none"):
        raise ValueError(f"INPUT.RANDOM_FLIP must be 'horizontal', 'vertical' or 'none', got {input_cfg.RANDOM_FLIP!r}")
    flip = flip_mode != "none" and bool(rng.random() < 0.5)
    return ResizeFlip(h, w, new_h, new_w, hflip=flip and flip_mode == "horizontal", vflip=flip and flip_mode == "vertical")


def build_test_transform(h: int, w: int, input_cfg) -> ResizeFlip:
    """Test-time resize from `cfg.INPUT` (MIN_SIZE_TEST, MAX_SIZE_TEST); never flips."""
    new_h, new_w = resize_shortest_edge_size(h, w, int(input_cfg.MIN_SIZE_TEST), int(input_cfg.MAX_SIZE_TEST))
    return ResizeFlip(h, w, new_h, new_w)
