"""Predictor contract (CONTRACTS.md) on the tiny model with random weights and with a saved checkpoint."""
import os

import numpy as np
import pytest
import torch

from semseg_core import Predictor, Result
from semseg_core.checkpoint import save_checkpoint
from semseg_core.config import ConfigError, load_config
from semseg_core.constants import UNKNOWN_ID
from semseg_core.device import DeviceError
from semseg_core.postprocess import PostprocessOptions

torch.set_num_threads(2)
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY_YAML = os.path.join(REPO, "config", "models", "Synthetic", "semseg_tiny.yaml")


def _image(h=120, w=160, seed=0):
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
    img[20:70, 30:90] = (220, 40, 40)  # a couple of flat objects on noise
    img[60:110, 100:150] = (40, 200, 60)
    return img


@pytest.fixture(scope="module")
def predictor():
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match="randomly initialised"):
        # UNK_THR 2.0 (the largest cosine distance) makes every detection a known candidate; with 0.0 none is.
        return Predictor(config=TINY_YAML, device="cpu", overrides=["MODEL.DML.UNK_THR", "1.0"])


def _check_result(r: Result, h: int, w: int, class_names, timed=True):
    n = len(r)
    assert r.boxes.shape == (n, 4) and r.boxes.dtype == np.float32
    assert r.scores.shape == (n,) and r.scores.dtype == np.float32
    assert r.class_ids.shape == (n,) and r.class_ids.dtype == np.int64
    assert r.is_known.shape == (n,) and r.is_known.dtype == np.bool_
    assert r.unknown_scores.shape == (n,) and r.unknown_scores.dtype == np.float32
    assert r.masks.shape == (n, h, w) and r.masks.dtype == np.bool_
    assert r.label_image.shape == (h, w) and r.label_image.dtype == np.uint16
    assert len(r.class_names) == n and (r.inference_time_s > 0 or not timed)
    assert np.all(np.diff(r.scores) <= 0), "sorted by score, descending"
    assert np.all(r.boxes[:, 0] >= 0) and np.all(r.boxes[:, 2] <= w) and np.all(r.boxes[:, 3] <= h)
    for cid, name, known in zip(r.class_ids, r.class_names, r.is_known):
        assert known == (cid != UNKNOWN_ID)
        assert name == (class_names[cid] if known else "unknown")
    # label image: value k+1 where instance k is the highest-scoring mask covering the pixel
    expected = np.zeros((h, w), dtype=np.uint16)
    for k in range(n - 1, -1, -1):
        expected[r.masks[k]] = k + 1
    np.testing.assert_array_equal(r.label_image, expected)


def test_result_contract_and_label_image(predictor):
    img = _image()
    r = predictor(img)
    assert len(r) > 0, "a random-weight model still returns (low-quality) instances"
    _check_result(r, 120, 160, predictor.class_names)
    assert predictor.class_names == ["box", "disc", "triangle", "ring", "star", "cross"]
    assert r.is_known.any(), "with UNK_THR 1.0 the softmax classifier labels some instances"


def test_outputs_are_sorted_pasted_and_labelled(predictor):
    """Model outputs (unknowns first, then knowns) -> Result: score order, pasted masks, label image."""
    full = torch.ones(1, 28, 28)
    out = {  # two overlapping boxes and one apart; model order: unknown first
        "boxes": torch.tensor([[10.0, 10.0, 50.0, 40.0], [30.0, 20.0, 70.0, 60.0], [100.0, 5.0, 120.0, 25.0]]),
        "scores": torch.tensor([0.3, 0.9, 0.6]),
        "classes": torch.tensor([UNKNOWN_ID, 2, 0]),
        "unknown_scores": torch.tensor([0.5, 0.01, 0.02]),
        "mask_probs": torch.stack([full, full, full]),
    }
    r = predictor._to_result(out, 80, 128)
    _check_result(r, 80, 128, predictor.class_names, timed=False)
    np.testing.assert_allclose(r.scores, [0.9, 0.6, 0.3])
    assert r.class_names == ["triangle", "box", "unknown"] and r.is_known.tolist() == [True, True, False]
    np.testing.assert_allclose(r.unknown_scores, [0.01, 0.02, 0.5])
    assert r.label_image[30, 40] == 1  # overlap of boxes 0 and 1: the higher score (0.9) wins
    assert r.label_image[15, 15] == 3 and r.label_image[15, 110] == 2 and r.label_image[70, 10] == 0
    assert r.masks[0].sum() == 40 * 40 and r.masks[2].sum() == 40 * 30  # full masks fill their boxes
    empty = predictor._to_result({k: v[:0] for k, v in out.items()}, 80, 128)
    assert len(empty) == 0 and empty.masks.shape == (0, 80, 128) and not empty.label_image.any()


def test_masks_false_keeps_everything_but_the_mask_stack(predictor):
    """masks=False (the node's path): same instances and label image, no N x H x W masks copied out."""
    img = _image()
    full, lean = predictor(img), predictor(img, masks=False)
    assert lean.masks is None and len(lean) == len(full) > 0
    for name in ("boxes", "scores", "class_ids", "is_known", "unknown_scores", "label_image"):
        np.testing.assert_array_equal(getattr(lean, name), getattr(full, name), err_msg=name)
    assert lean.class_names == full.class_names


def test_options_choose_the_output(predictor):
    """PostprocessOptions reach the post-processing: raw (default, the authors' output) vs the instance map; a
    wrong type is a clear error. The rules themselves are tested in test_postprocess.py."""
    img = _image()
    raw = predictor(img)
    assert len(raw) == len(predictor(img, options=PostprocessOptions()))
    imap = predictor(img, options=PostprocessOptions(output="instance_map"))
    assert (imap.masks.sum(axis=0) <= 1).all(), "instance map: no pixel in two instances"
    assert all(imap.masks[k].any() for k in range(len(imap))), "instance map: every instance has pixels"
    with pytest.raises(TypeError, match="options must be a PostprocessOptions"):
        predictor(img, options={"output": "raw"})


def test_unk_thr_override_reaches_the_model():
    torch.manual_seed(0)
    with pytest.warns(UserWarning):
        strict = Predictor(config=TINY_YAML, overrides=["MODEL.DML.UNK_THR", "0.0"])
    assert strict.cfg.MODEL.DML.UNK_THR == 0.0
    r = strict(_image())
    assert len(r) > 0 and not r.is_known.any() and set(r.class_names) == {"unknown"}
    assert np.all(r.class_ids == UNKNOWN_ID)


def test_rgb_and_bgr_inputs_agree(predictor):
    rgb = _image(seed=3)
    a = predictor(rgb)
    b = predictor(np.ascontiguousarray(rgb[..., ::-1]), color="bgr")
    assert len(a) == len(b)
    np.testing.assert_array_equal(a.boxes, b.boxes)
    np.testing.assert_array_equal(a.label_image, b.label_image)


def test_predict_batch_matches_single_images(predictor):
    imgs = [_image(seed=1), _image(seed=2)]
    batch = predictor.predict_batch(imgs)
    assert len(batch) == 2
    for img, r in zip(imgs, batch):
        single = predictor(img)
        _check_result(r, 120, 160, predictor.class_names)
        assert len(r) == len(single)
        np.testing.assert_allclose(r.scores, single.scores, atol=1e-4)
        np.testing.assert_allclose(r.boxes, single.boxes, atol=1e-2)
    assert predictor.predict_batch([]) == []


def test_resize_follows_the_test_size_of_the_config(predictor):
    item = predictor._prepare(np.zeros((480, 640, 3), np.uint8), "rgb", 0)
    # tiny config: shorter side 256, max 512; int(256 * 640 / 480 + 0.5) = 341
    assert tuple(item["image"].shape) == (3, 256, 341) and item["image"].dtype == torch.uint8
    assert (item["height"], item["width"]) == (480, 640)
    r = predictor(_image(h=480, w=640))
    assert r.label_image.shape == (480, 640) and r.masks.shape[1:] == (480, 640)


def test_bad_inputs_are_clear_errors(predictor):
    with pytest.raises(ValueError, match="uint8"):
        predictor(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        predictor(np.zeros((10, 10), np.uint8))
    with pytest.raises(TypeError, match="numpy"):
        predictor(torch.zeros(10, 10, 3, dtype=torch.uint8))
    with pytest.raises(ValueError, match="color"):
        predictor(_image(), color="hsv")


def test_bad_device_and_amp_are_clear_errors():
    with pytest.raises(ValueError, match="amp"):
        Predictor(config=TINY_YAML, device="cpu", amp="fp16")
    with pytest.raises(DeviceError, match="'tpu' is not supported"):
        Predictor(config=TINY_YAML, device="tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the path of a machine without CUDA")
def test_cuda_without_cuda_is_an_error():
    with pytest.raises(DeviceError, match="CUDA is not available"):
        Predictor(config=TINY_YAML, device="cuda")


def test_weights_alone_restore_config_and_model(predictor, tmp_path):
    path = save_checkpoint(str(tmp_path / "tiny.pth"), predictor.model, predictor.cfg)
    restored = Predictor(weights=path)
    assert restored.cfg.MODEL.BACKBONE.NAME == "resnet18_torchvision" and restored.cfg.MODEL.DML.UNK_THR == 1.0
    img = _image(seed=5)
    a, b = predictor(img), restored(img)
    np.testing.assert_array_equal(a.boxes, b.boxes)
    np.testing.assert_array_equal(a.label_image, b.label_image)
    assert a.class_names == b.class_names
    lowered = Predictor(weights=path, overrides=["MODEL.DML.UNK_THR", "0.0"])
    assert not lowered(img).is_known.any()


def test_checkpoint_without_config_needs_one(predictor, tmp_path):
    path = save_checkpoint(str(tmp_path / "bare.pth"), predictor.model)  # no cfg stored
    with pytest.raises(ConfigError, match="no embedded config"):
        Predictor(weights=path)
    assert len(Predictor(config=TINY_YAML, weights=path, overrides=["MODEL.DML.UNK_THR", "1.0"])(_image())) > 0


def test_default_model_is_the_embedded_asset():
    p = Predictor()  # test_shipped_model.py: the asset is committed, whole and packaged
    assert p.class_names == list(load_config(TINY_YAML).DATASETS.KNOWN_CLASSES)
    _check_result(p(_image()), 120, 160, p.class_names)
