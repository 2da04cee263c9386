"""The shipped default model, semseg_core/assets/semseg_tiny_synthetic.pt, is committed, whole and packaged: the
README's `Predictor()` and `make demo` depend on it. Nothing here skips, so a missing, truncated or unpackaged
asset fails here (and in test_embedded_model.py, which checks what the model does)."""
import filecmp
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from semseg_core import Predictor
from semseg_core.checkpoint import CheckpointError, load_checkpoint
from semseg_core.config import load_config
from semseg_core.predictor import DEFAULT_WEIGHTS

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ASSET = os.path.join("semseg_core", "assets", "semseg_tiny_synthetic.pt")
TINY_YAML = os.path.join(REPO, "config", "models", "Synthetic", "semseg_tiny.yaml")


def test_the_default_weights_are_the_committed_asset():
    assert os.path.samefile(DEFAULT_WEIGHTS, os.path.join(REPO, ASSET))
    if not os.path.exists(os.path.join(REPO, ".git")):
        pytest.fail(f"{REPO} is not a git checkout: cannot tell whether {ASSET} is committed")
    tracked = subprocess.run(["git", "ls-files", "--error-unmatch", ASSET], cwd=REPO, capture_output=True, text=True)
    assert tracked.returncode == 0, f"{ASSET} is not committed: {tracked.stderr}"


def test_the_asset_loads_whole_and_the_default_predictor_runs_it():
    checkpoint = load_checkpoint(DEFAULT_WEIGHTS)  # weights_only loading of the whole zip archive
    assert checkpoint["config"], "the asset carries its config, so Predictor() needs no YAML"
    predictor = Predictor()  # strict state-dict load: every tensor present with the right shape
    assert predictor.class_names == list(load_config(TINY_YAML).DATASETS.KNOWN_CLASSES)
    image = np.full((120, 160, 3), 40, np.uint8)
    image[30:90, 40:110] = (220, 40, 40)
    result = predictor(image)
    assert result.label_image.shape == (120, 160)
    assert np.isfinite(result.scores).all() and len(result) > 0


def test_a_truncated_asset_is_refused(tmp_path):
    # what the load above would meet if the file were cut short (an interrupted copy or a partial LFS fetch)
    truncated = tmp_path / "semseg_tiny_synthetic.pt"
    with open(DEFAULT_WEIGHTS, "rb") as src:
        truncated.write_bytes(src.read(os.path.getsize(DEFAULT_WEIGHTS) // 2))
    with pytest.raises(CheckpointError):
        load_checkpoint(str(truncated))


def test_the_asset_is_in_the_built_package(tmp_path):
    # setup.py's package_data, as a wheel or `pip install` builds it (build_py copies packages + their data)
    build = subprocess.run([sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(tmp_path / "lib")],
                           cwd=REPO, capture_output=True, text=True, timeout=120)
    assert build.returncode == 0, build.stderr[-2000:]
    built = tmp_path / "lib" / ASSET
    assert built.is_file(), f"setup.py does not package {ASSET} (package_data)"
    assert filecmp.cmp(built, DEFAULT_WEIGHTS, shallow=False)
    shutil.rmtree(tmp_path / "lib")
