"""Fixtures for the bag tests (ROS traffic isolation comes from test/conftest.py): a tiny random-weight
checkpoint of the synthetic config, so the replay tests do not depend on the trained embedded model."""
from pathlib import Path

import pytest

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
