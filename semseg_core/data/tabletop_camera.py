"""Pinhole camera for the tabletop renderer: intrinsics <-> OpenGL matrices, look-at poses, depth linearisation.

Frames: the camera pose is given in the ROS optical convention (x right, y down, z forward); OpenGL looks down -z
with y up. Pixel (u, v) = (0, 0) is the top-left pixel, as in sensor_msgs/CameraInfo.
"""

from dataclasses import dataclass
from typing import Dict, List

import numpy as np

# OpenGL camera axes expressed in the optical frame: x_gl = x_opt, y_gl = -y_opt, z_gl = -z_opt.
_OPTICAL_FROM_GL = np.diag([1.0, -1.0, -1.0])


@dataclass(frozen=True)
class CameraIntrinsics:
    """Pinhole intrinsics of an undistorted camera (pixels).

    Args:
        width: image width.
        height: image height.
        fx: focal length along x.
        fy: focal length along y.
        cx: principal point x.
        cy: principal point y.
    """
    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float

    def __post_init__(self):
        if self.width < 16 or self.height < 16:
            raise ValueError(f"camera image must be at least 16x16, got {self.width}x{self.height}")
        if not (self.fx > 0 and self.fy > 0):
            raise ValueError(f"camera focal lengths must be > 0, got fx={self.fx}, fy={self.fy}")

    @property
    def k(self) -> List[float]:
        """Row-major 3x3 camera matrix, as sensor_msgs/CameraInfo.k."""
        return [self.fx, 0.0, self.cx, 0.0, self.fy, self.cy, 0.0, 0.0, 1.0]

    def camera_info(self) -> Dict:
        """The CameraInfo fields that describe this camera (plumb_bob with zero distortion)."""
        p = [self.fx, 0.0, self.cx, 0.0, 0.0, self.fy, self.cy, 0.0, 0.0, 0.0, 1.0, 0.0]
        return {"width": self.width, "height": self.height, "distortion_model": "plumb_bob",
                "d": [0.0] * 5, "k": self.k, "r": [1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0], "p": p}

    def projection_matrix(self, near: float, far: float) -> np.ndarray:
        """4x4 OpenGL projection matrix giving exactly these intrinsics (pixel centres at integer + 0.5)."""
        w, h = float(self.width), float(self.height)
        return np.array([
            [2.0 * self.fx / w, 0.0, 1.0 - 2.0 * (self.cx + 0.5) / w, 0.0],
            [0.0, 2.0 * self.fy / h, 2.0 * (self.cy + 0.5) / h - 1.0, 0.0],
            [0.0, 0.0, -(far + near) / (far - near), -2.0 * far * near / (far - near)],
            [0.0, 0.0, -1.0, 0.0],
        ])


# A RealSense-D435-like colour camera at 640x480 (the default of the generator).
DEFAULT_INTRINSICS = CameraIntrinsics(width=640, height=480, fx=615.0, fy=615.0, cx=319.5, cy=239.5)


def look_at(eye, target, world_up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """4x4 world-from-camera pose (optical frame) of a camera at ``eye`` looking at ``target``."""
    eye, target, world_up = (np.asarray(v, dtype=np.float64) for v in (eye, target, world_up))
    forward = target - eye
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, world_up)
    norm = np.linalg.norm(right)
    if norm < 1e-6:
        raise ValueError("camera looks along the up direction; the look-at pose is undefined")
    right /= norm
    down = np.cross(forward, right)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = right, down, forward, eye
    return pose


def view_matrix(world_from_camera: np.ndarray) -> np.ndarray:
    """4x4 OpenGL view matrix (gl-camera-from-world) of an optical-frame camera pose."""
    world_from_gl = world_from_camera.copy()
    world_from_gl[:3, :3] = world_from_camera[:3, :3] @ _OPTICAL_FROM_GL
    return np.linalg.inv(world_from_gl)


def gl_list(matrix: np.ndarray) -> List[float]:
    """A 4x4 matrix as the column-major list of 16 floats that OpenGL-style APIs (pybullet) take."""
    return [float(v) for v in np.asarray(matrix, dtype=np.float64).T.ravel()]


def linear_depth(z_buffer: np.ndarray, near: float, far: float) -> np.ndarray:
    """Depth along the optical axis (metres, float32) from an OpenGL depth buffer in [0, 1]; 0 where nothing
    was drawn (buffer value 1 = the far plane)."""
    z_buffer = np.asarray(z_buffer, dtype=np.float64)
    depth = far * near / (far - (far - near) * z_buffer)
    depth[z_buffer >= 1.0] = 0.0
    return depth.astype(np.float32)


def depth_to_millimetres(depth_m: np.ndarray) -> np.ndarray:
    """16UC1 depth (millimetres, 0 = invalid) from metres; beyond 65.535 m is invalid too."""
    mm = np.round(np.asarray(depth_m, dtype=np.float64) * 1000.0)
    mm[(mm <= 0) | (mm > 65535) | ~np.isfinite(mm)] = 0
    return mm.astype(np.uint16)


def rotation_to_quaternion(rotation: np.ndarray) -> np.ndarray:
    """Unit quaternion (x, y, z, w), w >= 0, of a 3x3 rotation matrix."""
    m = np.asarray(rotation, dtype=np.float64)
    trace = m[0, 0] + m[1, 1] + m[2, 2]
    if trace > 0:
        s = 2.0 * np.sqrt(trace + 1.0)
        q = [(m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, 0.25 * s]
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
        q = [0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s, (m[2, 1] - m[1, 2]) / s]
    elif m[1, 1] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
        q = [(m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s, (m[0, 2] - m[2, 0]) / s]
    else:
        s = 2.0 * np.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
        q = [(m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s, (m[1, 0] - m[0, 1]) / s]
    q = np.asarray(q)
    q /= np.linalg.norm(q)
    return -q if q[3] < 0 else q


def quaternion_to_rotation(q) -> np.ndarray:
    """3x3 rotation matrix of a quaternion (x, y, z, w)."""
    x, y, z, w = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])
