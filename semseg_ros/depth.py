"""3D centroid and extent of each instance from its mask's depth pixels (no ROS types here).

Holes (0 or NaN depth) are ignored; outliers (mixed pixels on mask borders, background seen through
gaps) are handled by taking the median as the centroid and a percentile range as the extent.
"""
from dataclasses import dataclass

import cv2
import numpy as np


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
    def from_camera_info(cls, info):
        """From a sensor_msgs/CameraInfo (row-major K); ValueError when K is unset."""
        k = [float(v) for v in info.k]
        if k[0] <= 0.0 or k[4] <= 0.0:
            raise ValueError(f"camera_info K has no focal length (fx={k[0]}, fy={k[4]})")
        return cls(fx=k[0], fy=k[4], cx=k[2], cy=k[5], width=int(info.width), height=int(info.height))

    def scaled_to(self, width, height):
        """The same camera at another resolution (depth image resized relative to camera_info)."""
        if width == self.width and height == self.height or self.width <= 0 or self.height <= 0:
            return self
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


def instance_boxes_3d(label_image, depth_m, intrinsics, min_points=10, percentiles=(5.0, 95.0),
                      min_depth=0.05, max_depth=100.0):
    """One Box3D per instance id present in ``label_image`` with at least ``min_points`` valid depths.

    label_image: (H, W) uint16, 0 = background, k = instance k.  depth_m: (h, w) float32 metres,
    aligned with the colour image (resized with nearest-neighbour labels when sizes differ).
    """
    depth_h, depth_w = depth_m.shape[:2]
    if label_image.shape[:2] != (depth_h, depth_w):
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
