"""The Predictor's speed switches: torch.compile of the backbone + FPN (compile= / TEST.COMPILE) and autocast
(amp= / TEST.AMP). Their speed is measured in benchmarks/gpu_node.py (BENCHMARKS.md), never here."""
import os

import numpy as np
import pytest
import torch

from semseg_core import Predictor
from semseg_core.config import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY_YAML = os.path.join(REPO, "config", "models", "Synthetic", "semseg_tiny.yaml")
COMPILED_TYPE = torch._dynamo.eval_frame.OptimizedModule


def build(**kwargs):
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match="randomly initialised"):
        return Predictor(config=TINY_YAML, device="cpu", **kwargs)


def test_compile_is_off_on_the_cpu_by_default():
    predictor = build()
    assert predictor.compiled is False
    assert not isinstance(predictor.model.backbone, COMPILED_TYPE)


@pytest.mark.parametrize("how, expected", [({"compile": True}, True), ({"compile": False}, False),
                                           ({"overrides": ["TEST.COMPILE", "enabled"]}, True),
                                           ({"overrides": ["TEST.COMPILE", "disabled"]}, False),
                                           ({"overrides": ["TEST.COMPILE", "enabled"], "compile": False}, False)])
def test_compile_switch_wraps_only_the_backbone(how, expected):
    predictor = build(**how)
    assert predictor.compiled is expected
    assert isinstance(predictor.model.backbone, COMPILED_TYPE) is expected
    assert not isinstance(predictor.model.roi_heads, COMPILED_TYPE)  # variable-size stages stay eager


def test_cudagraphs_value_compiles_and_the_argument_still_wins():
    predictor = build(overrides=["TEST.COMPILE", "cudagraphs"])
    assert predictor.compiled is True and isinstance(predictor.model.backbone, COMPILED_TYPE)
    predictor = build(overrides=["TEST.COMPILE", "cudagraphs"], compile=False)
    assert predictor.compiled is False and not isinstance(predictor.model.backbone, COMPILED_TYPE)


def test_bad_switch_values_are_clear_errors():
    with pytest.raises(ConfigError, match=r"TEST.COMPILE must be one of \['auto', 'cudagraphs', 'disabled', 'enabled'\], "
                                          r"got 'on'"):
        Predictor(config=TINY_YAML, device="cpu", overrides=["TEST.COMPILE", "on"])
    with pytest.raises(ConfigError, match="TEST.AMP must be one of float16, bfloat16, fp16, bf16 .* got 'int8'"):
        Predictor(config=TINY_YAML, device="cpu", overrides=["TEST.AMP", "int8"])
    with pytest.raises(ValueError, match=r"amp='bfloat16' \(argument or TEST.AMP\) is for CUDA devices"):
        Predictor(config=TINY_YAML, device="cpu", overrides=["TEST.AMP", "bf16"])


@pytest.mark.slow
def test_compiled_backbone_gives_the_eager_result():
    """The compiled path really runs (inductor on the CPU here, ~70 s cold) and changes nothing but rounding,
    also after the input size changes (a portrait frame: one recompile with symbolic sizes)."""
    rng = np.random.default_rng(0)
    overrides = ["MODEL.DML.UNK_THR", "1.0"]
    eager, compiled = build(overrides=overrides), build(overrides=overrides, compile=True)
    for h, w in ((96, 128), (200, 150)):
        image = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
        image[20:70, 30:90] = (220, 40, 40)
        a, b = eager(image, masks=False), compiled(image, masks=False)
        assert len(a) == len(b) > 0
        np.testing.assert_allclose(b.boxes, a.boxes, atol=1e-2)
        np.testing.assert_allclose(b.scores, a.scores, atol=1e-4)
        np.testing.assert_array_equal(b.class_ids, a.class_ids)
        np.testing.assert_array_equal(b.label_image, a.label_image)
