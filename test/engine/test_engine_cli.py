"""The training command line: --help from the repo root without installing, clear errors on bad input."""
import subprocess

import pytest

from conftest import PYTHON, REPO_ROOT, TINY_CONFIG, TRAIN_SCRIPT, subprocess_env
from semseg_core.engine import main


def test_help_runs_as_a_script_from_the_repo_root():
    env = subprocess_env()
    env.pop("PYTHONPATH", None)  # works without installing semseg_core
    proc = subprocess.run([PYTHON, TRAIN_SCRIPT, "--help"], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for flag in ("--config-file", "--eval-only", "--resume", "--num-gpus", "--num-machines", "--machine-rank",
                 "--dist-url", "KEY VALUE"):
        assert flag in proc.stdout


def test_unknown_override_key_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--config-file", TINY_CONFIG, "SOLVER.BASE_LRR", "0.1", "OUTPUT_DIR", str(tmp_path)])
    assert exc.value.code == 2
    assert "SOLVER.BASE_LRR" in capsys.readouterr().err


def test_missing_config_file_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--config-file", str(tmp_path / "nope.yaml")])
    assert "nope.yaml" in capsys.readouterr().err


def test_eval_only_without_weights_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="MODEL.WEIGHTS"):
        main(["--config-file", TINY_CONFIG, "--eval-only", "OUTPUT_DIR", str(tmp_path)])
