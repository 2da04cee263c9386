"""The fast test-time configs: they differ from the faithful ones only in the documented switches, load the
same weights, and still produce valid Predictor results with fewer ROIs."""
import os

import numpy as np
import pytest
import torch

from semseg_core import Predictor
from semseg_core.config import load_config

torch.set_num_threads(2)
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODELS = os.path.join(REPO, "config", "models")

# (faithful, fast, the switches the fast config is allowed to change: all test-time only)
PAIRS = [
    ("Synthetic/semseg_tiny.yaml", "Synthetic/semseg_tiny_fast.yaml",
     {"MODEL.RPN.APPLY_NMS", "MODEL.RPN.POST_NMS_TOPK_TEST", "MODEL.CHANNELS_LAST"}),
    ("COCO/semseg_R50_FPN_128k.yaml", "COCO/semseg_R50_FPN_fast.yaml",
     {"MODEL.RPN.APPLY_NMS", "MODEL.RPN.POST_NMS_TOPK_TEST", "INPUT.MIN_SIZE_TEST", "INPUT.MAX_SIZE_TEST",
      "MODEL.CHANNELS_LAST"}),
]


def _flatten(node, prefix=""):
    flat = {}
    for key, value in node.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


@pytest.mark.parametrize("faithful,fast,switches", PAIRS)
def test_fast_config_differs_only_in_documented_switches(faithful, fast, switches):
    a = _flatten(load_config(os.path.join(MODELS, faithful)))
    b = _flatten(load_config(os.path.join(MODELS, fast)))
    assert a.keys() == b.keys()
    changed = {k for k in a if a[k] != b[k]}
    assert changed == switches, f"undocumented differences: {sorted(changed ^ switches)}"
    assert a["MODEL.RPN.APPLY_NMS"] is False and b["MODEL.RPN.APPLY_NMS"] is True
    assert a["MODEL.CHANNELS_LAST"] is False and b["MODEL.CHANNELS_LAST"] is True


def _scene(h=240, w=320):
    rng = np.random.default_rng(1)
    img = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
    img[30:120, 40:150] = (220, 40, 40)
    img[100:200, 180:290] = (40, 200, 60)
    return img


def _box_head_rows(predictor, image):
    rows = []
    hook = predictor.model.roi_heads.box_head.register_forward_hook(lambda m, i, o: rows.append(o.shape[0]))
    try:
        result = predictor(image)
    finally:
        hook.remove()
    return result, rows[0]


def test_fast_tiny_predictor_valid_with_fewer_rois(tmp_path):
    from semseg_core.checkpoint import save_checkpoint
    from semseg_core.modeling import build_model

    faithful_yaml = os.path.join(MODELS, "Synthetic", "semseg_tiny.yaml")
    fast_yaml = os.path.join(MODELS, "Synthetic", "semseg_tiny_fast.yaml")
    torch.manual_seed(0)
    cfg = load_config(faithful_yaml)
    weights = str(tmp_path / "tiny.pt")
    save_checkpoint(weights, build_model(cfg), cfg)
    # Thresholds 0 so that a random-weight model returns instances; UNK_THR 1.0 gives both kinds.
    overrides = ["MODEL.ROI_HEADS.OBJ_SCORE_THRESH_TEST", "0.0", "MODEL.SOFTMAXCLS.KNOWN_SCORE_THRESH", "0.0",
                 "MODEL.SOFTMAXCLS.UNKNOWN_SCORE_THRESH", "0.0", "MODEL.DML.UNK_THR", "1.0"]
    faithful = Predictor(config=faithful_yaml, weights=weights, overrides=overrides)
    fast = Predictor(config=fast_yaml, weights=weights, overrides=overrides)  # the same checkpoint loads
    image = _scene()
    r_faithful, rows_faithful = _box_head_rows(faithful, image)
    r_fast, rows_fast = _box_head_rows(fast, image)
    assert rows_fast <= fast.cfg.MODEL.RPN.POST_NMS_TOPK_TEST < rows_faithful
    assert fast.model.backbone.body.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    for r in (r_faithful, r_fast):
        n = len(r)
        assert n > 0 and r.masks.shape == (n, 240, 320) and r.label_image.shape == (240, 320)
        assert np.all(np.diff(r.scores) <= 0)
        expected = np.zeros((240, 320), dtype=np.uint16)
        for k in range(n - 1, -1, -1):  # highest score wins where masks overlap
            expected[r.masks[k]] = k + 1
        np.testing.assert_array_equal(r.label_image, expected)


@pytest.mark.parametrize("n", [3, 300])  # uint8 ranks below 256 instances, int32 above
def test_label_image_highest_score_wins(n):
    """The vectorised label image (max over score-ranked masks) equals painting from the lowest score up."""
    with pytest.warns(UserWarning, match="randomly initialised"):
        predictor = Predictor(config=os.path.join(MODELS, "Synthetic", "semseg_tiny.yaml"))
    gen = torch.Generator().manual_seed(n)
    xy = torch.randint(0, 50, (n, 2), generator=gen).float()
    size = torch.randint(4, 20, (n, 2), generator=gen).float()
    out = {"boxes": torch.cat([xy, xy + size], dim=1), "scores": torch.rand(n, generator=gen),
           "classes": torch.zeros(n, dtype=torch.int64), "unknown_scores": torch.rand(n, generator=gen),
           "mask_probs": torch.rand(n, 1, 28, 28, generator=gen)}
    r = predictor._to_result(out, 64, 72)
    expected = np.zeros((64, 72), dtype=np.uint16)
    for k in range(n - 1, -1, -1):
        expected[r.masks[k]] = k + 1
    assert r.masks.any(axis=(1, 2)).sum() > min(n, 200) // 2
    np.testing.assert_array_equal(r.label_image, expected)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA path")
def test_gpu_benchmark_script_fails_clearly_without_cuda():
    import subprocess
    import sys
    done = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", "gpu_all.py"), "--skip", "node"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "CUDA is not available" in done.stderr


def test_min_scores_drop_instances_before_pasting(monkeypatch):
    """Publish thresholds given to the Predictor: dropped instances are never pasted; the kept ones, their
    masks and the label image equal the full result filtered afterwards."""
    from semseg_core import postprocess
    from semseg_core.constants import UNKNOWN_ID

    with pytest.warns(UserWarning, match="randomly initialised"):
        predictor = Predictor(config=os.path.join(MODELS, "Synthetic", "semseg_tiny.yaml"))
    gen = torch.Generator().manual_seed(3)
    n = 12
    xy = torch.randint(0, 40, (n, 2), generator=gen).float()
    out = {"boxes": torch.cat([xy, xy + 25], dim=1), "scores": torch.linspace(0.95, 0.05, n),
           "classes": torch.tensor([UNKNOWN_ID, 0, 1] * 4), "unknown_scores": torch.rand(n, generator=gen),
           "mask_probs": torch.rand(n, 1, 28, 28, generator=gen)}
    pasted = []
    original = postprocess.paste_masks
    monkeypatch.setattr(postprocess, "paste_masks", lambda m, *a, **k: pasted.append(len(m)) or original(m, *a, **k))
    full = predictor._to_result(dict(out), 64, 72)
    kept = predictor._to_result(dict(out), 64, 72, postprocess.PostprocessOptions(known_score_threshold=0.5,
                                                                                   unknown_score_threshold=0.3))
    unknown = full.class_ids == UNKNOWN_ID
    expect = np.where(unknown, full.scores >= 0.3, full.scores >= 0.5)
    assert pasted == [n, int(expect.sum())] and 0 < expect.sum() < n
    np.testing.assert_array_equal(kept.scores, full.scores[expect])
    np.testing.assert_array_equal(kept.class_ids, full.class_ids[expect])
    np.testing.assert_array_equal(kept.masks, full.masks[expect])
    label = np.zeros((64, 72), dtype=np.uint16)
    for k in range(len(kept) - 1, -1, -1):
        label[kept.masks[k]] = k + 1
    np.testing.assert_array_equal(kept.label_image, label)
