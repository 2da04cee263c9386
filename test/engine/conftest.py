"""Shared set-up of the engine tests: a tiny synthetic dataset made once, and overrides that shrink the tiny
model's run (128 px images, a few iterations) so that a training run takes seconds on one core."""
import os
import sys

import pytest
import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY_CONFIG = os.path.join(REPO_ROOT, "config", "models", "Synthetic", "semseg_tiny.yaml")
TRAIN_SCRIPT = os.path.join(REPO_ROOT, "training", "train.py")
PYTHON = sys.executable


def tiny_overrides(dataset_root, output_dir, max_iter=4, checkpoint_period=100, test_sets="[]", extra=()):
    return [
        "MODEL.DEVICE", "cpu",
        "DATASETS.ROOT", str(dataset_root),
        "DATASETS.SYNTHETIC.TRAIN_IMAGES", "8",
        "DATASETS.SYNTHETIC.TEST_IMAGES", "3",
        "DATASETS.SYNTHETIC.IMAGE_SIZE", "128",
        "DATASETS.TEST", test_sets,
        "INPUT.MIN_SIZE_TRAIN", "[128]",
        "INPUT.MAX_SIZE_TRAIN", "128",
        "INPUT.MIN_SIZE_TEST", "128",
        "INPUT.MAX_SIZE_TEST", "128",
        "SOLVER.MAX_ITER", str(max_iter),
        "SOLVER.STEPS", f"[{max(1, max_iter - 2)}]",
        "SOLVER.WARMUP_ITERS", "2",
        "SOLVER.CHECKPOINT_PERIOD", str(checkpoint_period),
        "OUTPUT_DIR", str(output_dir),
        *extra,
    ]


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    """DATASETS.ROOT holding a tiny synthetic_train/synthetic_test, generated once by the real generator."""
    from semseg_core.config import load_config
    from semseg_core.data import ensure_synthetic_dataset

    root = tmp_path_factory.mktemp("datasets")
    cfg = load_config(TINY_CONFIG, tiny_overrides(root, root / "unused"))
    ensure_synthetic_dataset(cfg, names=["synthetic_train", "synthetic_test"], progress=False)
    return root


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def subprocess_env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    return env
