"""Deployable model files (`python -m semseg_core.checkpoint export`) and the UNK_THR calibration tool."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from semseg_core import Predictor
from semseg_core.checkpoint import load_checkpoint, main as checkpoint_main, save_checkpoint
from semseg_core.config import load_config
from semseg_core.modeling import build_model
from semseg_core.predictor import DEFAULT_WEIGHTS

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY_YAML = os.path.join(REPO, "config", "models", "Synthetic", "semseg_tiny.yaml")


@pytest.fixture(scope="module")
def training_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    cfg = load_config(TINY_YAML, ["MODEL.DEVICE", "cpu"])
    model = build_model(cfg)
    path = str(tmp_path_factory.mktemp("ckpt") / "model_final.pth")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    save_checkpoint(path, model, cfg, optimizer=optimizer.state_dict(), iteration=41)
    return path, model


def test_export_half_keeps_the_model_and_drops_training_state(training_checkpoint, tmp_path):
    source, model = training_checkpoint
    out = str(tmp_path / "model.pt")
    assert checkpoint_main(["export", source, out, "--half", "MODEL.DML.UNK_THR", "0.3"]) == 0
    exported = load_checkpoint(out)
    assert "optimizer" not in exported and exported["meta"]["iteration"] == 41
    assert all(v.dtype == torch.float16 for v in exported["model"].values() if v.is_floating_point())
    assert os.path.getsize(out) < 0.6 * os.path.getsize(source)
    predictor = Predictor(weights=out, device="cpu")
    assert predictor.cfg.MODEL.DML.UNK_THR == pytest.approx(0.3)
    assert predictor.model.roi_heads.embedding.unknown_threshold == pytest.approx(0.3)
    # fp16 storage, fp32 compute: weights equal the originals up to fp16 rounding
    for name, value in predictor.model.state_dict().items():
        original = model.state_dict()[name]
        if original.is_floating_point():
            assert torch.allclose(value, original.half().float()), name


def test_export_rejects_a_file_without_config(tmp_path):
    bare = str(tmp_path / "bare.pth")
    save_checkpoint(bare, {"w": torch.zeros(2)})
    assert checkpoint_main(["export", bare, str(tmp_path / "x.pt")]) == 1
    assert not os.path.exists(tmp_path / "x.pt")


def test_calibration_on_the_embedded_model_suggests_a_threshold_that_keeps_knowns(tmp_path):
    written = tmp_path / "calibrated.yaml"
    run = subprocess.run([sys.executable, os.path.join(REPO, "training", "calibrate_unknown_threshold.py"),
                          "--config-file", TINY_YAML, "--synthetic-val", "6", "--seed", "11", "--quantile", "0.8",
                          "--write-config", str(written), "MODEL.WEIGHTS", DEFAULT_WEIGHTS, "MODEL.DEVICE", "cpu"],
                         capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr[-2000:]
    line = [ln for ln in run.stdout.splitlines() if "suggested" in ln][0]
    suggested = float(line.rsplit("=", 1)[1])
    assert 0.0 < suggested < 2.0  # cosine distance range
    cfg = load_config(str(written))
    assert cfg.MODEL.DML.UNK_THR == pytest.approx(suggested, abs=1e-4)
    assert np.isclose(cfg.MODEL.ROI_HEADS.NUM_KNOWN_CLASSES, 6)
