"""End-to-end training of the real tiny model on the real synthetic loader: outputs, exact resume, NaN stop."""
import json
import os
import signal
import subprocess
import time

import pytest
import torch
import yaml

from conftest import PYTHON, REPO_ROOT, TINY_CONFIG, TRAIN_SCRIPT, subprocess_env, tiny_overrides
from semseg_core.engine import main
from semseg_core.modeling import LOSS_KEYS


def _load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def test_training_run_writes_checkpoints_logs_and_metrics(synthetic_root, tmp_path):
    out = tmp_path / "out"
    main(["--config-file", TINY_CONFIG,
          *tiny_overrides(synthetic_root, out, max_iter=4, checkpoint_period=2, test_sets="[synthetic_test]")])

    assert (out / "last_checkpoint").read_text().strip() == "model_final.pth"
    mid, final = _load(out / "model_0000001.pth"), _load(out / "model_final.pth")
    assert mid["iteration"] == 1 and final["iteration"] == 3
    assert set(final) >= {"model", "optimizer", "scheduler", "grad_scaler", "iteration", "rng", "config"}
    assert len(final["rng"]) == 1  # one RNG state per process
    changed = [k for k, v in final["model"].items() if v.is_floating_point() and not torch.equal(v, mid["model"][k])]
    assert changed, "the weights did not change between iteration 1 and 3"
    # lr after 4 steps: warmup over 2 iterations, x0.1 at STEPS=[2] -> 0.1 * BASE_LR
    assert final["scheduler"]["last_epoch"] == 4
    assert final["scheduler"]["_last_lr"][0] == pytest.approx(0.002)

    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["iteration"] == 3
    assert set(LOSS_KEYS) <= set(records[-1]) and {"total_loss", "lr", "time"} <= set(records[-1])
    assert records[-1]["total_loss"] == pytest.approx(sum(records[-1][k] for k in LOSS_KEYS), rel=1e-5)

    dumped = yaml.safe_load((out / "config.yaml").read_text())
    assert dumped["SOLVER"]["MAX_ITER"] == 4 and dumped["OUTPUT_DIR"] == str(out)
    assert (out / "loss_curve.png").stat().st_size > 1000
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(out))

    metrics = json.loads((out / "metrics_final.json").read_text())
    assert set(metrics["synthetic_test"]) == {"bbox", "segm"}
    assert "AOSE" in metrics["synthetic_test"]["segm"] and "AP_k" in metrics["synthetic_test"]["bbox"]

    # --eval-only on the final weights reproduces the end-of-training evaluation
    ev = tmp_path / "eval"
    main(["--config-file", TINY_CONFIG, "--eval-only",
          *tiny_overrides(synthetic_root, ev, test_sets="[synthetic_test]",
                          extra=["MODEL.WEIGHTS", str(out / "model_final.pth")])])
    assert json.loads((ev / "metrics_eval.json").read_text()) == metrics


def _run_train(args, **kwargs):
    return subprocess.Popen([PYTHON, TRAIN_SCRIPT, "--config-file", TINY_CONFIG, *args], cwd=REPO_ROOT,
                            env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kwargs)


def _finish(proc, timeout=240):
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out.decode(errors="replace")[-3000:]
    return out.decode(errors="replace")


@pytest.mark.slow
def test_run_killed_midway_and_resumed_ends_with_the_same_weights(synthetic_root, tmp_path):
    max_iter, period = 8, 3
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    main(["--config-file", TINY_CONFIG, *tiny_overrides(synthetic_root, straight, max_iter, period)])

    proc = _run_train(tiny_overrides(synthetic_root, broken, max_iter, period))
    marker = broken / "last_checkpoint"
    deadline = time.monotonic() + 180
    while not (marker.exists() and marker.read_text().strip() == "model_0000002.pth"):
        assert proc.poll() is None, proc.communicate()[0].decode(errors="replace")[-3000:]
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert not (broken / "model_final.pth").exists(), "the run ended before it could be interrupted"

    log = _finish(_run_train(["--resume", *tiny_overrides(synthetic_root, broken, max_iter, period)]))
    assert "Resuming from" in log

    a, b = _load(straight / "model_final.pth"), _load(broken / "model_final.pth")
    assert a["iteration"] == b["iteration"] == max_iter - 1
    for key, value in a["model"].items():
        assert torch.allclose(value.float(), b["model"][key].float(), rtol=0, atol=1e-6), key
    for pid, state in a["optimizer"]["state"].items():
        assert torch.allclose(state["momentum_buffer"], b["optimizer"]["state"][pid]["momentum_buffer"],
                              rtol=0, atol=1e-6)
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"] == max_iter
    # the resumed run's log continues where the checkpoint was taken, without duplicates
    iters = [json.loads(line)["iteration"] for line in (broken / "metrics.jsonl").read_text().splitlines()]
    assert iters == sorted(set(iters))


def test_nan_loss_stops_with_the_loss_name_and_iteration(synthetic_root, tmp_path):
    out = tmp_path / "out"
    args = ["--config-file", TINY_CONFIG,
            *tiny_overrides(synthetic_root, out, max_iter=3, checkpoint_period=1,
                            extra=["MODEL.ROI_MASK_HEAD.LOSS_WEIGHT", ".nan"])]
    with pytest.raises(FloatingPointError, match=r"NaN or infinite at iteration 0: loss_mask"):
        main(args)
    assert not (out / "last_checkpoint").exists() and not (out / "model_final.pth").exists()


def test_diverging_run_stops_at_the_iteration_and_keeps_the_last_good_checkpoint(synthetic_root, tmp_path):
    out = tmp_path / "out"
    # an absurd learning rate (a typo in the exponent) blows the weights up with the first step
    args = ["--config-file", TINY_CONFIG,
            *tiny_overrides(synthetic_root, out, max_iter=3, checkpoint_period=1,
                            extra=["SOLVER.BASE_LR", "1e30", "SOLVER.WARMUP_ITERS", "0",
                                   "SOLVER.CLIP_GRADIENTS.ENABLED", "False"])]
    with pytest.raises(FloatingPointError, match=r"iteration 1"):
        main(args)
    assert (out / "last_checkpoint").read_text().strip() == "model_0000000.pth"
    assert not (out / "model_0000001.pth").exists() and not (out / "model_final.pth").exists()


def test_without_resume_an_existing_output_dir_starts_over(synthetic_root, tmp_path):
    out = tmp_path / "out"
    main(["--config-file", TINY_CONFIG, *tiny_overrides(synthetic_root, out, max_iter=2)])
    main(["--config-file", TINY_CONFIG, *tiny_overrides(synthetic_root, out, max_iter=3)])
    assert _load(out / "model_final.pth")["iteration"] == 2
    assert "starts over from iteration 0" in (out / "log.txt").read_text()
    # --resume after completion: nothing left to train, same final weights
    before = _load(out / "model_final.pth")["model"]
    main(["--config-file", TINY_CONFIG, "--resume", *tiny_overrides(synthetic_root, out, max_iter=3)])
    after = _load(out / "model_final.pth")["model"]
    assert all(torch.equal(before[k], after[k]) for k in before)
