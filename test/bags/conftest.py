"""Fixtures for the bag tests: isolated DDS traffic (before rclpy starts) and a tiny random-weight
checkpoint of the synthetic config, so the replay test does not depend on the trained embedded model."""
import os
import random
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", str(random.Random(os.getpid() + 6).randint(1, 200)))
os.environ.setdefault("ROS_LOG_DIR", tempfile.mkdtemp(prefix="semseg_bags_test_log_"))

REPO = Path(__file__).resolve().parents[2]
TINY_CONFIG = REPO / "config" / "models" / "Synthetic" / "semseg_tiny.yaml"


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory):
    import torch
    from semseg_core.checkpoint import save_checkpoint
    from semseg_core.config import load_config
    from semseg_core.modeling import build_model

    cfg = load_config(str(TINY_CONFIG))
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "tiny_random.pt"
    save_checkpoint(str(path), build_model(cfg), cfg, meta={"torch": str(torch.__version__)})
    return str(path)
