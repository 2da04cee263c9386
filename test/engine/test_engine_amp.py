"""Mixed precision in the trainer: bfloat16 autocast runs on a CPU, float16 stays a CUDA-only option."""
import json
import math

import pytest
import torch

from conftest import TINY_CONFIG, tiny_overrides
from semseg_core.config import load_config
from semseg_core.engine.trainer import Trainer, amp_settings

CPU = torch.device("cpu")


def _cfg(*extra):
    return load_config(TINY_CONFIG, list(extra))


def test_amp_settings_per_device_and_dtype():
    assert amp_settings(load_config(), CPU) == (False, torch.float16)  # off by default (the authors train in fp32)
    assert amp_settings(_cfg(), CPU) == (True, torch.bfloat16)  # the tiny CPU config trains in bfloat16
    assert amp_settings(_cfg("SOLVER.AMP.ENABLED", "false"), CPU) == (False, torch.bfloat16)
    # float16 autocast is for CUDA: on a CPU it is switched off, not silently run in another precision
    assert amp_settings(_cfg("SOLVER.AMP.DTYPE", "float16"), CPU) == (False, torch.float16)
    assert amp_settings(_cfg("SOLVER.AMP.DTYPE", "float16"), torch.device("cuda")) == (True, torch.float16)
    with pytest.raises(ValueError, match="SOLVER.AMP.DTYPE must be one of"):
        amp_settings(_cfg("SOLVER.AMP.DTYPE", "fp8"), CPU)
    # the short spellings the Predictor and the benchmarks use mean the same (semseg_core/precision.py)
    assert amp_settings(_cfg("SOLVER.AMP.DTYPE", "bf16"), CPU) == (True, torch.bfloat16)
    assert amp_settings(_cfg("SOLVER.AMP.DTYPE", "fp16"), torch.device("cuda")) == (True, torch.float16)


def test_bfloat16_training_on_the_cpu_learns_as_float32_does(synthetic_root, tmp_path):
    def run(name, *extra):
        out = tmp_path / name
        cfg = _cfg(*tiny_overrides(synthetic_root, out, max_iter=12, extra=["SOLVER.WARMUP_ITERS", "1", *extra]))
        Trainer(cfg, log_period=1).train()  # what training/train.py runs, with a metrics line every iteration
        losses = [json.loads(line)["total_loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]
        weights = torch.load(out / "model_final.pth", map_location="cpu", weights_only=True)["model"]
        return losses, weights

    fp32_losses, fp32 = run("fp32", "SOLVER.AMP.ENABLED", "false")
    bf16_losses, bf16 = run("bf16", "SOLVER.AMP.ENABLED", "true", "SOLVER.AMP.DTYPE", "bfloat16")
    assert len(bf16_losses) == len(fp32_losses) == 12 and all(math.isfinite(v) for v in bf16_losses)
    # learning: the mean loss of the last three iterations falls below that of the first three, in both precisions
    # (same seed and data), and bfloat16 keeps at least half of float32's fall (measured: 0.80 fp32, 0.62 bf16)
    fall = {name: sum(v[:3]) / 3 - sum(v[-3:]) / 3 for name, v in (("fp32", fp32_losses), ("bf16", bf16_losses))}
    assert fall["fp32"] > 0.1 * sum(fp32_losses[:3]) / 3, fp32_losses
    assert fall["bf16"] > 0.5 * fall["fp32"], (fp32_losses, bf16_losses)
    assert bf16_losses != fp32_losses, "the bfloat16 run computes in bfloat16"
    assert all(v.dtype == fp32[k].dtype for k, v in bf16.items()), "weights stay float32 (autocast casts activations)"
    assert any(not torch.equal(v, fp32[k]) for k, v in bf16.items() if v.is_floating_point())
