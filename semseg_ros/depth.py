"""3D centroid and extent of each instance from its mask's depth pixels (no ROS types in its interface).

Holes (0 or NaN depth) are ignored; outliers (mixed pixels on mask borders, background seen through
gaps) are handled by taking the median as the centroid and a percentile range as the extent.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, List, Sequence

import cv2
import numpy as np

from semseg_ros.image_codec import MAX_SIDE

# A camera_info is plausible when its field of view lies in this range (a 1 degree telephoto to a 170 degree
# wide angle; fx = 1e-300 or fx = 1e300 describe no real pinhole camera) ...
MIN_FIELD_OF_VIEW_DEG = 1.0
MAX_FIELD_OF_VIEW_DEG = 170.0
# ... its size is within the image limits (image_codec.MAX_SIDE), and images matched to each other (colour,
# depth, camera_info) have the same aspect ratio within this relative tolerance (a resized stream keeps it; a
# 1x1 camera_info for a 640x480 image does not).
ASPECT_TOLERANCE = 0.02


class CameraGeometryError(ValueError):
    """Intrinsics or image sizes that would give non-finite or meaningless 3D output."""

    kind = "geometry"


def check_same_aspect(what: str, width: int, height: int, other_what: str, other_width: int,
                      other_height: int) -> None:
    """CameraGeometryError unless both sizes are positive and have the same aspect ratio (ASPECT_TOLERANCE)."""
    if min(width, height, other_width, other_height) <= 0:
        raise CameraGeometryError(f"{what} is {width}x{height} and {other_what} {other_width}x{other_height}: "
                                  "an empty size cannot be matched")
    ratio, other_ratio = width / height, other_width / other_height
    if abs(ratio - other_ratio) > ASPECT_TOLERANCE * other_ratio:
        raise CameraGeometryError(f"{what} is {width}x{height} but {other_what} is {other_width}x{other_height}: "
                                  f"aspect ratios {ratio:.4g} and {other_ratio:.4g} differ by more than "
                                  f"{ASPECT_TOLERANCE:.0%}, so they do not show the same view")


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics of the depth image (pixels)."""
    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    @classmethod
    def from_camera_info(cls, info: Any) -> Intrinsics:
        """From a sensor_msgs/CameraInfo (row-major K); CameraGeometryError (a ValueError) unless plausible:
        every K entry finite, a size within [1, MAX_SIDE], a field of view within [MIN_FIELD_OF_VIEW_DEG,
        MAX_FIELD_OF_VIEW_DEG] on both axes, the principal point inside the image."""
        k = [float(v) for v in info.k]
        width, height = int(info.width), int(info.height)
        if not all(math.isfinite(v) for v in k):
            raise CameraGeometryError(f"camera_info K has non-finite entries: {k}")
        fx, fy, cx, cy = k[0], k[4], k[2], k[5]
        if fx <= 0.0 or fy <= 0.0:
            raise CameraGeometryError(f"camera_info K has no focal length (fx={fx}, fy={fy})")
        if not (1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE):
            raise CameraGeometryError(f"camera_info size {width}x{height} is not a camera resolution "
                                      f"(1 to {MAX_SIDE} per side)")
        for axis, focal, side in (("horizontal", fx, width), ("vertical", fy, height)):
            field_of_view = math.degrees(2.0 * math.atan(side / (2.0 * focal)))
            if not MIN_FIELD_OF_VIEW_DEG <= field_of_view <= MAX_FIELD_OF_VIEW_DEG:
                raise CameraGeometryError(
                    f"camera_info gives a {axis} field of view of {field_of_view:.4g} degrees (focal length "
                    f"{focal:.4g} px for {side} px), outside [{MIN_FIELD_OF_VIEW_DEG}, {MAX_FIELD_OF_VIEW_DEG}]")
        if not (0.0 <= cx <= width and 0.0 <= cy <= height):
            raise CameraGeometryError(f"camera_info principal point ({cx:.4g}, {cy:.4g}) lies outside its "
                                      f"{width}x{height} image")
        return cls(fx=fx, fy=fy, cx=cx, cy=cy, width=width, height=height)

    def scaled_to(self, width: int, height: int) -> Intrinsics:
        """The same camera at another resolution (depth image resized relative to camera_info).

        CameraGeometryError when the aspect ratios differ: that is another view, not a resized one.
        """
        if width == self.width and height == self.height:
            return self
        check_same_aspect("the depth image", width, height, "its camera_info", self.width, self.height)
        sx, sy = width / self.width, height / self.height
        return Intrinsics(self.fx * sx, self.fy * sy, (self.cx + 0.5) * sx - 0.5,
                          (self.cy + 0.5) * sy - 0.5, width, height)


@dataclass
class Box3D:
    """Centroid (x, y, z) and axis-aligned extent (size x, y, z) in metres, camera optical frame."""
    instance_id: int
    center: np.ndarray
    size: np.ndarray
    num_points: int


def instance_boxes_3d(label_image: np.ndarray, depth_m: np.ndarray, intrinsics: Intrinsics, min_points: int = 10,
                      percentiles: Sequence[float] = (5.0, 95.0), min_depth: float = 0.05,
                      max_depth: float = 100.0) -> List[Box3D]:
    """One Box3D per instance id present in ``label_image`` with at least ``min_points`` valid depths.

    label_image: (H, W) uint16, 0 = background, k = instance k.  depth_m: (h, w) float32 metres,
    aligned with the colour image (resized with nearest-neighbour labels when sizes differ; CameraGeometryError
    when the aspect ratios differ).
    """
    depth_h, depth_w = depth_m.shape[:2]
    if label_image.shape[:2] != (depth_h, depth_w):
        check_same_aspect("the depth image", depth_w, depth_h, "the colour image", label_image.shape[1],
                          label_image.shape[0])
        label_image = cv2.resize(label_image, (depth_w, depth_h), interpolation=cv2.INTER_NEAREST)
    intrinsics = intrinsics.scaled_to(depth_w, depth_h)
    labels = label_image.ravel()
    depth = depth_m.ravel()
    with np.errstate(invalid="ignore"):
        valid = (labels > 0) & np.isfinite(depth) & (depth >= min_depth) & (depth <= max_depth)
    pixel_index = np.flatnonzero(valid)
    if pixel_index.size == 0:
        return []
    pixel_labels = labels[pixel_index]
    order = np.argsort(pixel_labels, kind="stable")
    pixel_index, pixel_labels = pixel_index[order], pixel_labels[order]
    ids, starts = np.unique(pixel_labels, return_index=True)
    boxes = []
    for instance_id, begin, end in zip(ids, starts, list(starts[1:]) + [pixel_labels.size]):
        if end - begin < min_points:
            continue
        index = pixel_index[begin:end]
        z = depth[index].astype(np.float64)
        v, u = np.divmod(index, depth_w)
        x = (u - intrinsics.cx) * z / intrinsics.fx
        y = (v - intrinsics.cy) * z / intrinsics.fy
        points = np.stack([x, y, z], axis=1)
        center = np.median(points, axis=0)
        low, high = np.percentile(points, percentiles, axis=0)
        boxes.append(Box3D(int(instance_id), center, high - low, int(end - begin)))
    return boxes
