"""Test-wide set-up: ROS traffic isolation and the project's ROS runtime environment.

Set at import (before any test module imports rclpy), in os.environ so that every process a test
starts inherits it:
- ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST: no traffic to or from other hosts;
- a random ROS_DOMAIN_ID per pytest run (SEMSEG_TEST_ROS_DOMAIN_ID fixes it): parallel runs by other
  people or CI jobs on the same host do not see each other;
- ROS_LOG_DIR in a temp folder removed at the end;
- semseg_ros.env.configure(): AMENT_PREFIX_PATH, the Fast DDS profile.
"""

import os
import random
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

_ROS_LOG_DIR = tempfile.mkdtemp(prefix="semseg_test_roslog_")
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ["ROS_DOMAIN_ID"] = os.environ.get("SEMSEG_TEST_ROS_DOMAIN_ID") or str(random.SystemRandom().randint(1, 100))
os.environ["ROS_LOG_DIR"] = _ROS_LOG_DIR
if os.environ.get("ROS_DISTRO") == "humble":  # Humble predates ROS_AUTOMATIC_DISCOVERY_RANGE
    os.environ["ROS_LOCALHOST_ONLY"] = "1"

try:
    from semseg_ros.env import configure as _configure_ros_environment
except ImportError:  # semseg_ros not importable: the ROS tests will say so themselves
    pass
else:
    _configure_ros_environment()


def pytest_unconfigure(config):
    shutil.rmtree(_ROS_LOG_DIR, ignore_errors=True)


@pytest.fixture
def ros_env():
    """A copy of the environment for ROS subprocesses (isolation variables + ROS runtime variables)."""
    return dict(os.environ)


@pytest.fixture
def repo_root():
    return REPO_ROOT


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory):
    """A checkpoint of the tiny synthetic config with fixed random weights (config stored inside)."""
    import torch
    from semseg_core.checkpoint import save_checkpoint
    from semseg_core.config import load_config
    from semseg_core.modeling import build_model

    cfg = load_config(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                   "config", "models", "Synthetic", "semseg_tiny.yaml"))
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "tiny_random.pt"
    save_checkpoint(str(path), build_model(cfg), cfg)
    return str(path)
