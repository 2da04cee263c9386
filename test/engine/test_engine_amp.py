"""Mixed precision in the trainer: bfloat16 autocast runs on a CPU, float16 stays a CUDA-only option."""
import json

import pytest
import torch

from conftest import TINY_CONFIG, tiny_overrides
from semseg_core.config import load_config
from semseg_core.engine import main
from semseg_core.engine.trainer import amp_settings

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


def test_bfloat16_training_on_the_cpu_is_finite_and_tracks_float32(synthetic_root, tmp_path):
    # What this checks: a few bfloat16 steps run, stay finite and land near the float32 run with the same seed
    # and data, in float32 weights. Learning itself (loss falling over many steps) is not shown here: four steps
    # are too few to tell it from noise, and a longer run belongs in benchmarks/bench_training.py.
    def run(name, *extra):
        out = tmp_path / name
        main(["--config-file", TINY_CONFIG,
              *tiny_overrides(synthetic_root, out, max_iter=4, extra=["SOLVER.WARMUP_ITERS", "1", *extra])])
        records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        weights = torch.load(out / "model_final.pth", map_location="cpu", weights_only=True)["model"]
        return records, weights

    fp32_log, fp32 = run("fp32", "SOLVER.AMP.ENABLED", "false")
    bf16_log, bf16 = run("bf16", "SOLVER.AMP.ENABLED", "true", "SOLVER.AMP.DTYPE", "bfloat16")
    assert all(torch.isfinite(torch.tensor(r["total_loss"])) for r in bf16_log)
    # same seed and data: only the arithmetic differs, so the losses are close but not identical
    last_fp32, last_bf16 = fp32_log[-1]["total_loss"], bf16_log[-1]["total_loss"]
    assert last_bf16 != last_fp32 and last_bf16 == pytest.approx(last_fp32, rel=0.25)
    assert all(v.dtype == fp32[k].dtype for k, v in bf16.items()), "weights stay float32 (autocast casts activations)"
    assert any(not torch.equal(v, fp32[k]) for k, v in bf16.items() if v.is_floating_point())
