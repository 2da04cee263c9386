"""Reading image files as detectron2's `detectron2.data.detection_utils.read_image` does.

PIL decodes the file, the EXIF orientation tag is applied (a phone photo stored sideways comes out upright, and its
size then matches the COCO json, which lists the upright size), the image is converted to RGB and its channels are
reversed for "BGR". cv2.imread ignores EXIF orientation before OpenCV 3.1 and decodes some JPEGs differently (libjpeg
versions), so the faithful path is PIL's.
"""
import os
from typing import Tuple

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from semseg_core.data.coco_openset import DatasetError

IMAGE_FORMATS = ("BGR", "RGB")
EXIF_ORIENTATION_TAG = 0x0112


class ImageReadError(DatasetError):
    """A file that exists but cannot be decoded as an image (message names the file)."""


def read_image(path: str, image_format: str, listed_in: str = "") -> np.ndarray:
    """H x W x 3 uint8 in `image_format` ("BGR" | "RGB"), EXIF orientation applied.

    A missing file raises FileNotFoundError, an undecodable one ImageReadError; both name the file and, when
    given, the annotation file `listed_in` that lists it.
    """
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"INPUT.FORMAT must be 'BGR' or 'RGB', got {image_format!r}")
    where = f" (listed in {listed_in})" if listed_in else ""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image not found: {path}{where}")
    try:
        with Image.open(path) as pil:
            pil = ImageOps.exif_transpose(pil)
            rgb = np.asarray(pil.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ImageReadError(f"cannot decode image {path}{where}: corrupt or not an image ({err})") from None
    if image_format == "BGR":
        return np.ascontiguousarray(rgb[:, :, ::-1])
    return np.array(rgb)  # writable copy (np.asarray of a PIL image is read-only)


def image_size(path: str, listed_in: str = "") -> Tuple[int, int]:
    """(height, width) of an image file after its EXIF orientation, from the header only (no pixel decoding)."""
    where = f" (listed in {listed_in})" if listed_in else ""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image not found: {path}{where}")
    try:
        with Image.open(path) as pil:
            w, h = pil.size
            orientation = pil.getexif().get(EXIF_ORIENTATION_TAG, 1)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ImageReadError(f"cannot read image {path}{where}: corrupt or not an image ({err})") from None
    return (w, h) if orientation in (5, 6, 7, 8) else (h, w)  # these orientations swap the axes
