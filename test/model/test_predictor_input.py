"""The Predictor feeds the model exactly the pixels detectron2's DefaultPredictor would: the uint8 image resized
with PIL bilinear to ResizeShortestEdge's size (INPUT.TEST_RESIZE "pil", the default). The faster "device" switch
resizes floats on the device and is allowed to differ by one grey level.

The pixels are captured with a forward pre-hook on the model, i.e. through the public call path.
"""
import os

import numpy as np
import pytest
import torch
from PIL import Image

from semseg_core import Predictor

torch.set_num_threads(1)
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY_YAML = os.path.join(REPO, "config", "models", "Synthetic", "semseg_tiny.yaml")


class _Captured(Exception):
    """Raised by the hook once the model's input is recorded (the rest of the forward is not needed)."""


def _predictor(min_size=800, max_size=1333, resize="pil"):
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match="randomly initialised"):
        return Predictor(config=TINY_YAML, device="cpu", overrides=[
            "INPUT.MIN_SIZE_TEST", str(min_size), "INPUT.MAX_SIZE_TEST", str(max_size), "INPUT.TEST_RESIZE", resize])


def _model_input(predictor, image, run_model=False):
    """HWC uint8 array the model receives for `image` (RGB in, the tiny config is RGB: no channel flip)."""
    seen = []

    def hook(_module, args):
        seen.append(args[0][0]["image"].permute(1, 2, 0).cpu().numpy())
        if not run_model:
            raise _Captured

    handle = predictor.model.register_forward_pre_hook(hook)
    try:
        predictor(image, color="rgb")
    except _Captured:
        pass
    finally:
        handle.remove()
    return seen[0]


def _d2_size(h, w, short, max_size):
    """detectron2's ResizeShortestEdge.get_output_shape, written out here in its float order: the short side is set
    to `short` itself and the cap's scale is computed first, so 720x1280 at 600/1000 gives 562.4999... -> 562
    (h * (short / h) * 1000 / 1066.67 = 562.5 would round to 563); each side rounded with int(x + 0.5)."""
    scale = short * 1.0 / min(h, w)
    nh, nw = (short * 1.0, scale * w) if h < w else (scale * h, short * 1.0)
    if max(nh, nw) > max_size:
        cap = max_size * 1.0 / max(nh, nw)
        nh, nw = nh * cap, nw * cap
    return int(nh + 0.5), int(nw + 0.5)


def _pil_bilinear(image, h, w):
    return np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))


def _camera_image(h, w, seed=0):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    image[h // 4: h // 2, w // 4: w // 2] = (230, 30, 90)  # edges, where interpolations disagree most
    return image


def test_640x480_frame_reaches_the_model_as_pil_bilinear_800x1067():
    predictor = _predictor()
    image = _camera_image(480, 640)
    got = _model_input(predictor, image, run_model=True)  # the whole prediction runs
    expected = np.asarray(Image.fromarray(image).resize((1067, 800), Image.BILINEAR))
    assert got.shape == (800, 1067, 3)
    assert np.array_equal(got, expected)


@pytest.mark.parametrize("min_size, max_size", [(800, 1333), (480, 640), (600, 1000)])
def test_every_size_matches_pil_exactly(min_size, max_size):
    predictor = _predictor(min_size, max_size)
    sizes = [(480, 640), (640, 480), (720, 1280), (1080, 1920), (100, 1000), (37, 53), (800, 1333), (801, 1200),
             (1200, 801), (3, 5), (1333, 800), (999, 1001), (257, 511)]
    for k, (h, w) in enumerate(sizes):
        image = _camera_image(h, w, seed=k)
        new_h, new_w = _d2_size(h, w, min_size, max_size)
        got = _model_input(predictor, image)
        assert got.shape == (new_h, new_w, 3), (h, w)
        assert np.array_equal(got, _pil_bilinear(image, new_h, new_w)), (h, w)


def test_device_resize_switch_is_one_grey_level_off_pil_when_upscaling():
    image = _camera_image(480, 640)
    pil = _model_input(_predictor(), image)
    device = _model_input(_predictor(resize="device"), image)
    diff = np.abs(pil.astype(int) - device.astype(int))
    assert diff.max() <= 1 and 0 < np.count_nonzero(diff)  # the switch is really another resize


def test_unknown_resize_mode_is_refused():
    with pytest.raises(Exception, match="TEST_RESIZE"):
        _model_input(_predictor(resize="opencv"), _camera_image(48, 64))
