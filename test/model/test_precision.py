"""One vocabulary for mixed precision (semseg_core/precision.py): float16 / bfloat16, with fp16 / bf16 as
accepted short forms, parsed the same way by the Predictor and the trainer."""
import pytest
import torch

from semseg_core.precision import amp_dtype, amp_name
from semseg_core.predictor import Predictor

TINY_YAML = "config/models/Synthetic/semseg_tiny.yaml"


@pytest.mark.parametrize("name, canonical, dtype", [
    ("float16", "float16", torch.float16), ("fp16", "float16", torch.float16),
    ("bfloat16", "bfloat16", torch.bfloat16), ("bf16", "bfloat16", torch.bfloat16),
])
def test_both_spellings_name_the_same_dtype(name, canonical, dtype):
    assert amp_name(name) == canonical
    assert amp_dtype(name) is dtype


def test_no_precision_stays_none_and_unknown_names_are_clear_errors():
    assert amp_dtype(None) is None
    for bad in ("fp32", "float32", "half", "FP16", ""):
        with pytest.raises(ValueError, match=r"SOLVER.AMP.DTYPE must be one of float16, bfloat16, fp16, bf16"):
            amp_name(bad, "SOLVER.AMP.DTYPE")


def test_predictor_reads_amp_with_the_same_parser():
    with pytest.raises(ValueError, match=r"amp must be one of .* got 'fp8'"):
        Predictor(config=TINY_YAML, device="cpu", amp="fp8")
    for name in ("bfloat16", "bf16"):  # valid names get past the parser to the CUDA-only rule
        with pytest.raises(ValueError, match="is for CUDA devices"):
            Predictor(config=TINY_YAML, device="cpu", amp=name)
