"""Training checkpoints: RNG states survive weights_only loading; a failed write leaves the previous one."""
import os
import random

import numpy as np
import pytest
import torch
from torch import nn

from semseg_core.config import get_cfg
from semseg_core.engine.checkpointing import (
    capture_rng_state,
    find_last_checkpoint,
    load_training_checkpoint,
    restore_rng_state,
    save_training_checkpoint,
)
from semseg_core.engine.optim import build_lr_scheduler, build_optimizer


def _draws():
    return random.random(), float(np.random.rand()), float(torch.rand(()))


def test_rng_state_round_trips_through_a_weights_only_file(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    np.random.randn()  # leaves numpy with a cached gaussian
    torch.save(capture_rng_state(), tmp_path / "rng.pt")
    expected = _draws()
    _draws()
    restore_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert _draws() == expected


def _save(out, name, net, iteration):
    cfg = get_cfg()
    opt = build_optimizer(cfg, net)
    sched = build_lr_scheduler(cfg, opt)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    return save_training_checkpoint(str(out), name, net, cfg, opt, sched, scaler, iteration, [capture_rng_state()])


def test_a_checkpoint_that_fails_mid_write_leaves_the_previous_one(tmp_path, monkeypatch):
    net = nn.Linear(3, 2)
    _save(tmp_path, "model_0000009.pth", net, 9)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():
        net.weight.add_(1.0)

    def disk_full(fd):  # the bytes are written, the flush to disk fails
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        _save(tmp_path, "model_0000019.pth", net, 19)
    monkeypatch.undo()

    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000009.pth"]  # no partial files
    last = find_last_checkpoint(str(tmp_path))
    assert last == str(tmp_path / "model_0000009.pth")
    ckpt = load_training_checkpoint(last)
    assert ckpt["iteration"] == 9
    assert all(torch.equal(ckpt["model"][k], before[k]) for k in before)


def test_last_checkpoint_naming_a_missing_file_is_a_clear_error(tmp_path):
    assert find_last_checkpoint(str(tmp_path)) is None
    (tmp_path / "last_checkpoint").write_text("model_0000004.pth")
    with pytest.raises(FileNotFoundError, match="model_0000004.pth"):
        find_last_checkpoint(str(tmp_path))


def test_plain_weights_are_not_a_training_checkpoint(tmp_path):
    from semseg_core.checkpoint import save_checkpoint

    save_checkpoint(str(tmp_path / "w.pth"), nn.Linear(2, 2))
    with pytest.raises(ValueError, match="missing"):
        load_training_checkpoint(str(tmp_path / "w.pth"))
