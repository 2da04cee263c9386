"""sensor_msgs/Image <-> numpy without cv_bridge.

Reading is a zero-copy view of ``msg.data`` where the layout allows it (``np.frombuffer`` over a
memoryview, rows sliced by ``step``); building a message assigns ``bytes``, never a Python list
(rclpy converts lists element by element, ~40 ms for one VGA frame).
"""
from __future__ import annotations

import re
import sys
from typing import Any, Optional, Tuple

import numpy as np

from sensor_msgs.msg import Image
from std_msgs.msg import Header

from semseg_ros.diagnostics import printable

# Largest image side accepted; anything bigger is treated as a corrupt header, not a frame to allocate.
MAX_SIDE = 16384
# Most channels a generic encoding (e.g. 8UC3) may declare: OpenCV's CV_CN_MAX is 512, but no camera or depth
# format uses more than 4, and a bigger count is a corrupt header.
MAX_CHANNELS = 4

_NAMED = {
    "rgb8": (np.uint8, 3), "bgr8": (np.uint8, 3), "rgba8": (np.uint8, 4), "bgra8": (np.uint8, 4),
    "rgb16": (np.uint16, 3), "bgr16": (np.uint16, 3), "rgba16": (np.uint16, 4), "bgra16": (np.uint16, 4),
    "mono8": (np.uint8, 1), "mono16": (np.uint16, 1),
}
_GENERIC_DTYPES = {"8U": np.uint8, "8S": np.int8, "16U": np.uint16, "16S": np.int16,
                   "32S": np.int32, "32F": np.float32, "64F": np.float64}
# "16UC1", "32FC3", or the type alone ("16U" = one channel). ASCII digits only, at most two of them: str.isdigit()
# also accepts "²" and "①", and int() of thousands of digits raises a plain ValueError.
_GENERIC_PATTERN = re.compile(r"(8U|8S|16U|16S|32S|32F|64F)(?:C([0-9]{1,2}))?")

# Encodings the perception node accepts as its colour input.
COLOR_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8")
DEPTH_ENCODINGS = ("16UC1", "32FC1", "mono16")
# Median depth (metres) of a plausible depth image: a 16UC1 image in metres has a median of a few millimetres,
# a 32FC1 image in millimetres one of hundreds to thousands of metres.
MIN_PLAUSIBLE_MEDIAN_M = 0.02
MAX_PLAUSIBLE_MEDIAN_M = 200.0


class ImageDecodeError(ValueError):
    """A message whose header and data do not describe a usable image.

    ``kind`` names the class of the problem ("encoding", "empty", "too_large", "layout", "data", "depth"): the
    node rate-limits its log per kind, so a stream of varied rejects of one kind gives one line per second.
    """

    def __init__(self, message: str, kind: str = "image"):
        super().__init__(message)
        self.kind = kind


def encoding_layout(encoding: str) -> Tuple[np.dtype, int]:
    """(numpy dtype, channels) of a ROS image encoding; ImageDecodeError if unknown."""
    if encoding in _NAMED:
        dtype, channels = _NAMED[encoding]
        return np.dtype(dtype), channels
    match = _GENERIC_PATTERN.fullmatch(encoding)
    if match is None:
        raise ImageDecodeError(f"unsupported image encoding {printable(encoding)}", "encoding")
    channels = int(match.group(2) or 1)
    if not 1 <= channels <= MAX_CHANNELS:
        raise ImageDecodeError(f"image encoding {printable(encoding)} declares {channels} channels; "
                               f"1 to {MAX_CHANNELS} are supported", "encoding")
    return np.dtype(_GENERIC_DTYPES[match.group(1)]), channels


def image_msg_to_numpy(msg: Any) -> Tuple[np.ndarray, str]:
    """Decode a sensor_msgs/Image into an (H, W) or (H, W, C) array and return (array, encoding).

    Row padding (``step`` > width * pixel size) is dropped by slicing; data in the non-native byte
    order is byte-swapped (a copy); otherwise the array is a read-only view of ``msg.data``.
    """
    encoding = msg.encoding
    dtype, channels = encoding_layout(encoding)
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise ImageDecodeError(f"empty image ({width}x{height}, encoding {encoding})", "empty")
    if height > MAX_SIDE or width > MAX_SIDE:
        raise ImageDecodeError(f"image size {width}x{height} exceeds the limit of {MAX_SIDE} per side",
                               "too_large")
    row_bytes = width * channels * dtype.itemsize
    if step < row_bytes:
        raise ImageDecodeError(
            f"step {step} is smaller than width*pixel size {row_bytes} ({width} px of {encoding})", "layout")
    if step % dtype.itemsize:
        raise ImageDecodeError(f"step {step} is not a multiple of the {dtype.itemsize}-byte sample size",
                               "layout")
    buffer = memoryview(msg.data).cast("B")
    needed = height * step
    if len(buffer) < needed:
        raise ImageDecodeError(
            f"data has {len(buffer)} bytes but {width}x{height} {encoding} with step {step} "
            f"needs height*step = {needed}", "data")
    rows = np.frombuffer(buffer, dtype=np.uint8, count=needed).reshape(height, step)[:, :row_bytes]
    array = rows.view(dtype)
    array.flags.writeable = False  # a view of the message: consumers must not change it
    array = array.reshape(height, width, channels) if channels > 1 else array.reshape(height, width)
    big_endian_data = bool(msg.is_bigendian)
    if dtype.itemsize > 1 and big_endian_data != (sys.byteorder == "big"):
        array = array.byteswap()  # copies; the message data stays untouched
    return array, encoding


def to_rgb8(array: np.ndarray, encoding: str) -> np.ndarray:
    """An HxWx3 uint8 RGB array for the predictor from a decoded colour image."""
    if encoding == "rgb8":
        return array
    if encoding == "bgr8":
        return array[:, :, ::-1]
    if encoding == "rgba8":
        return array[:, :, :3]
    if encoding == "bgra8":
        return array[:, :, 2::-1]
    if encoding == "mono8":
        return np.repeat(array[:, :, None], 3, axis=2)
    raise ImageDecodeError(
        f"encoding {printable(encoding)} is not a colour input; use one of {', '.join(COLOR_ENCODINGS)}",
        "encoding")


def depth_to_meters(array: np.ndarray, encoding: str) -> np.ndarray:
    """Float32 depth in metres from 16UC1/mono16 (millimetres) or 32FC1 (metres); 0/NaN = no depth.

    REP 118 fixes the units by encoding. A depth image in the other unit is refused (ImageDecodeError, kind
    "depth") rather than turned into 3D boxes 1000 times too near or too far: the median valid depth must lie
    within [MIN_PLAUSIBLE_MEDIAN_M, MAX_PLAUSIBLE_MEDIAN_M].
    """
    if encoding in ("16UC1", "mono16"):
        meters = array.astype(np.float32) * np.float32(0.001)
        unit, other = "millimetres", "metres"
    elif encoding == "32FC1":
        meters = array.astype(np.float32, copy=False)
        unit, other = "metres", "millimetres"
    else:
        raise ImageDecodeError(f"depth encoding {printable(encoding)} not supported; use one of "
                               f"{', '.join(DEPTH_ENCODINGS)}", "depth")
    sample = meters[::4, ::4]  # the units are a property of the whole image: a sparse sample decides
    with np.errstate(invalid="ignore"):
        valid = sample[np.isfinite(sample) & (sample > 0)]
    if valid.size:
        median = float(np.median(valid))
        if not MIN_PLAUSIBLE_MEDIAN_M <= median <= MAX_PLAUSIBLE_MEDIAN_M:
            raise ImageDecodeError(
                f"{encoding} depth is in {unit} (REP 118), but its median valid value is {median:.4g} m, "
                f"outside [{MIN_PLAUSIBLE_MEDIAN_M}, {MAX_PLAUSIBLE_MEDIAN_M}] m: is the driver writing "
                f"{other}?", "depth")
    return meters


def numpy_to_image_msg(array: np.ndarray, encoding: str, header: Optional[Header] = None,
                       msg: Optional[Image] = None) -> Image:
    """Build a sensor_msgs/Image from an (H, W) or (H, W, C) array (native byte order, no padding)."""
    dtype, channels = encoding_layout(encoding)
    array = np.ascontiguousarray(array)
    if array.dtype != dtype:
        raise ValueError(f"array dtype {array.dtype} does not match encoding {encoding} ({dtype})")
    got_channels = 1 if array.ndim == 2 else array.shape[2]
    if array.ndim not in (2, 3) or got_channels != channels:
        raise ValueError(f"array shape {array.shape} does not match encoding {encoding} ({channels} ch)")
    msg = msg if msg is not None else Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(array.shape[0]), int(array.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = sys.byteorder == "big"
    msg.step = int(array.shape[1] * channels * dtype.itemsize)
    msg.data = array.tobytes()
    return msg
