"""DDP: two CPU processes (gloo), spawned like ``--num-gpus 2``, train the tiny model to identical weights."""
import subprocess

import pytest
import torch

from conftest import PYTHON, REPO_ROOT, TINY_CONFIG, subprocess_env, tiny_overrides


@pytest.mark.slow
def test_two_gloo_processes_end_with_identical_weights(synthetic_root, tmp_path):
    out = tmp_path / "out"
    worker = f"{REPO_ROOT}/test/engine/ddp_worker.py"
    args = ["--config-file", TINY_CONFIG, "--num-gpus", "2", *tiny_overrides(synthetic_root, out, 3)]
    proc = subprocess.run([PYTHON, worker, str(tmp_path), *args],
                          cwd=REPO_ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert rank0["world_size"] == rank1["world_size"] == 2
    assert "2 process(es)" in (out / "log.txt").read_text()
    for key, value in rank0["model"].items():
        assert torch.equal(value, rank1["model"][key]), f"{key} differs between the ranks"
    final = torch.load(out / "model_final.pth", weights_only=True)
    assert len(final["rng"]) == 2  # both ranks' RNG states, for exact resume
    trained = [k for k, v in final["model"].items() if v.is_floating_point()]
    assert all(torch.equal(final["model"][k], rank0["model"][k]) for k in trained)
