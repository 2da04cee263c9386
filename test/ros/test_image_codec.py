"""Codec: every supported encoding, padded rows and either byte order decode to the same pixels."""
import re
import sys

import numpy as np
import pytest

from sensor_msgs.msg import Image

from semseg_ros.image_codec import (ImageDecodeError, depth_to_meters, image_msg_to_numpy,
                                    numpy_to_image_msg, to_rgb8)

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (7, 11, 3), dtype=np.uint8)


def _raw_msg(array, encoding, pad=0, big_endian=None):
    """Message built by hand (not by the codec under test): optional row padding and byte order."""
    big_endian = sys.byteorder == "big" if big_endian is None else big_endian
    data = array.astype(array.dtype.newbyteorder(">" if big_endian else "<"))
    rows = data.reshape(array.shape[0], -1).view(np.uint8)
    padded = np.concatenate([rows, np.full((rows.shape[0], pad), 0xAB, np.uint8)], axis=1)
    return Image(height=array.shape[0], width=array.shape[1], encoding=encoding,
                 is_bigendian=big_endian, step=padded.shape[1], data=padded.tobytes())


def _as_encoding(rgb, encoding):
    alpha = np.full(rgb.shape[:2] + (1,), 200, np.uint8)
    return {"rgb8": rgb, "bgr8": rgb[:, :, ::-1], "rgba8": np.concatenate([rgb, alpha], 2),
            "bgra8": np.concatenate([rgb[:, :, ::-1], alpha], 2)}[encoding]


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8"])
@pytest.mark.parametrize("pad", [0, 5])
def test_color_encodings_decode_to_the_same_rgb(encoding, pad):
    msg = _raw_msg(np.ascontiguousarray(_as_encoding(RGB, encoding)), encoding, pad=pad)
    array, got = image_msg_to_numpy(msg)
    assert got == encoding
    np.testing.assert_array_equal(to_rgb8(array, encoding), RGB)


def test_mono8_becomes_grey_rgb():
    grey = RGB[:, :, 0].copy()
    array, encoding = image_msg_to_numpy(_raw_msg(grey, "mono8", pad=3))
    rgb = to_rgb8(array, encoding)
    assert rgb.shape == (7, 11, 3)
    for channel in range(3):
        np.testing.assert_array_equal(rgb[:, :, channel], grey)


def test_unpadded_rgb8_is_a_zero_copy_view():
    msg = _raw_msg(RGB, "rgb8")
    array, _ = image_msg_to_numpy(msg)
    assert np.shares_memory(array, np.frombuffer(msg.data, np.uint8))
    assert not array.flags.writeable


@pytest.mark.parametrize("big_endian", [False, True])
@pytest.mark.parametrize("pad", [0, 4])
def test_16bit_depth_in_either_byte_order(big_endian, pad):
    depth_mm = RNG.integers(0, 60000, (5, 6), dtype=np.uint16)
    array, encoding = image_msg_to_numpy(_raw_msg(depth_mm, "16UC1", pad=pad, big_endian=big_endian))
    np.testing.assert_array_equal(array, depth_mm)
    np.testing.assert_allclose(depth_to_meters(array, encoding), depth_mm / 1000.0, rtol=1e-6)


def test_32fc1_big_endian_metres():
    depth = RNG.uniform(0.2, 5.0, (4, 3)).astype(np.float32)
    array, encoding = image_msg_to_numpy(_raw_msg(depth, "32FC1", big_endian=True))
    np.testing.assert_array_equal(depth_to_meters(array, encoding), depth)


def test_round_trip_through_the_builder():
    label = RNG.integers(0, 9, (8, 9), dtype=np.uint16)
    msg = numpy_to_image_msg(label, "mono16")
    assert msg.step == 18 and len(msg.data) == 8 * 18
    back, encoding = image_msg_to_numpy(msg)
    assert encoding == "mono16"
    np.testing.assert_array_equal(back, label)


@pytest.mark.parametrize("change, message", [
    (dict(encoding="yuv422_weird"), "unsupported image encoding"),
    (dict(data=bytes(7 * 33 - 1)), "needs height*step"),
    (dict(height=0, data=b""), "empty image"),
    (dict(width=0), "empty image"),
    (dict(height=100000, width=100000), "exceeds the limit"),
    (dict(step=10), "smaller than width"),
])
def test_malformed_messages_raise_a_clear_error(change, message):
    msg = _raw_msg(RGB, "rgb8")
    for key, value in change.items():
        setattr(msg, key, value)
    with pytest.raises(ImageDecodeError, match=re.escape(message)):
        image_msg_to_numpy(msg)


def test_depth_encoding_is_not_a_colour_input():
    array, encoding = image_msg_to_numpy(_raw_msg(np.zeros((2, 2), np.uint16), "16UC1"))
    with pytest.raises(ImageDecodeError, match="not a colour input"):
        to_rgb8(array, encoding)


@pytest.mark.parametrize("encoding", [
    "8UC" + "1" * 5000,          # int() of this many digits raises a plain ValueError (issue 17)
    "8UC" + "0" * 40 + "3",
    "8UC\u00b2", "32FC\u2460", "16UC\u0663", "8UC\uff13", "\uff18UC3",  # non-ASCII digits: ² ① ٣ ３ ８
    "8UC0", "8UC5", "16UC99", "8UC512", "32FC-1", "8UC+3", "8UC 3", "8UC3\n", "8UC", "8UCC3", "",
])
def test_encodings_are_parsed_strictly(encoding):
    msg = _raw_msg(RGB, "rgb8")
    msg.encoding = encoding
    with pytest.raises(ImageDecodeError) as caught:
        image_msg_to_numpy(msg)
    assert caught.value.kind == "encoding"
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 300, "peer text escaped and cut"


@pytest.mark.parametrize("encoding, dtype, channels", [
    ("8UC3", np.uint8, 3), ("16U", np.uint16, 1), ("32FC1", np.float32, 1), ("64FC4", np.float64, 4),
    ("16SC2", np.int16, 2), ("8SC1", np.int8, 1), ("32SC3", np.int32, 3),
])
def test_generic_encodings_still_decode(encoding, dtype, channels):
    shape = (3, 4, channels) if channels > 1 else (3, 4)
    array = np.arange(np.prod(shape)).reshape(shape).astype(dtype)
    back, got = image_msg_to_numpy(_raw_msg(array, encoding))
    assert got == encoding
    np.testing.assert_array_equal(back, array)


@pytest.mark.parametrize("array, encoding, message", [
    (np.full((8, 8), 2000.0, np.float32), "32FC1", "is the driver writing millimetres"),  # mm in a metres image
    (np.full((8, 8), 2, np.uint16), "16UC1", "is the driver writing metres"),             # m in a mm image
])
def test_depth_in_the_wrong_unit_is_refused(array, encoding, message):
    with pytest.raises(ImageDecodeError, match=message) as caught:
        depth_to_meters(array, encoding)
    assert caught.value.kind == "depth"


def test_depth_with_holes_and_plausible_values_passes():
    depth = np.full((8, 8), 1.5, np.float32)
    depth[::2] = np.nan
    depth[1::4] = 0.0
    np.testing.assert_array_equal(depth_to_meters(depth, "32FC1"), depth)
    empty = np.zeros((4, 4), np.uint16)                      # no valid pixel at all: nothing to judge, no error
    np.testing.assert_array_equal(depth_to_meters(empty, "16UC1"), 0.0)
