"""Optimizer groups and the LR schedule against detectron2's formulas, computed by hand."""
import pytest
import torch
from torch import nn

from semseg_core.config import get_cfg
from semseg_core.engine.optim import (
    build_lr_scheduler,
    build_optimizer,
    clip_gradients,
    warmup_multistep_factor,
)


class FrozenBatchNorm2d(nn.Module):  # a name-matched norm layer without parameters, as in the model
    def __init__(self, n):
        super().__init__()
        self.register_buffer("weight", torch.ones(n))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.gn = nn.GroupNorm(2, 4)
        self.frozen_bn = FrozenBatchNorm2d(4)
        self.fc = nn.Linear(4, 2)
        self.prototypes = nn.Parameter(torch.randn(3, 4))
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)


def _cfg(**solver):
    cfg = get_cfg()
    for k, v in solver.items():
        setattr(cfg.SOLVER, k, v)
    return cfg


def _group_of(opt, param):
    for g in opt.param_groups:
        if any(p is param for p in g["params"]):
            return g
    return None


def test_norm_params_get_weight_decay_norm_and_frozen_params_are_left_out():
    net = Net()
    opt = build_optimizer(_cfg(WEIGHT_DECAY=1e-4, WEIGHT_DECAY_NORM=0.0, BASE_LR=0.02, MOMENTUM=0.9), net)
    for p in (net.bn.weight, net.bn.bias, net.gn.weight, net.gn.bias):
        assert _group_of(opt, p)["weight_decay"] == 0.0
    for p in (net.conv.weight, net.conv.bias, net.fc.weight, net.prototypes):
        assert _group_of(opt, p)["weight_decay"] == pytest.approx(1e-4)
        assert _group_of(opt, p)["lr"] == pytest.approx(0.02)
    assert _group_of(opt, net.frozen.weight) is None and _group_of(opt, net.frozen.bias) is None
    n_trainable = sum(1 for p in net.parameters() if p.requires_grad)
    assert sum(len(g["params"]) for g in opt.param_groups) == n_trainable
    assert len(opt.param_groups) == 2  # merged by hyper-parameters, like detectron2
    assert opt.defaults["momentum"] == 0.9 and opt.defaults["nesterov"] is False


def test_bias_lr_factor_overrides_lr_and_norm_decay_of_biases():
    net = Net()
    opt = build_optimizer(_cfg(BASE_LR=0.01, BIAS_LR_FACTOR=2.0, WEIGHT_DECAY=1e-4, WEIGHT_DECAY_NORM=0.0), net)
    # detectron2: the bias override is applied after the norm rule, with WEIGHT_DECAY_BIAS = WEIGHT_DECAY
    for p in (net.conv.bias, net.fc.bias, net.bn.bias):
        assert _group_of(opt, p)["lr"] == pytest.approx(0.02)
        assert _group_of(opt, p)["weight_decay"] == pytest.approx(1e-4)
    assert _group_of(opt, net.bn.weight)["lr"] == pytest.approx(0.01)
    assert _group_of(opt, net.bn.weight)["weight_decay"] == 0.0


def _lrs(cfg, n):
    net = nn.Linear(2, 2)
    opt = build_optimizer(cfg, net)
    sched = build_lr_scheduler(cfg, opt)
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_warmup_multistep_schedule_matches_hand_computed_values():
    cfg = _cfg(BASE_LR=0.005, WARMUP_FACTOR=0.001, WARMUP_ITERS=400, STEPS=(840, 1160), GAMMA=0.1, MAX_ITER=1280)
    lrs = _lrs(cfg, 1280)
    assert lrs[0] == pytest.approx(0.005 * 0.001)
    # linear: factor = wf * (1 - a) + a, a = it / warmup_iters
    assert lrs[100] == pytest.approx(0.005 * (0.001 * 0.75 + 0.25))
    assert lrs[399] == pytest.approx(0.005 * (0.001 * (1 / 400) + 399 / 400))
    assert lrs[400] == pytest.approx(0.005)
    assert lrs[839] == pytest.approx(0.005)
    assert lrs[840] == pytest.approx(0.0005)  # the step applies at the milestone itself
    assert lrs[1159] == pytest.approx(0.0005)
    assert lrs[1160] == pytest.approx(0.00005)
    assert lrs[1279] == pytest.approx(0.00005)


def test_constant_warmup_and_steps_beyond_max_iter_and_step_inside_warmup():
    assert warmup_multistep_factor(5, [100], 0.1, 0.3, 10, "constant") == pytest.approx(0.3)
    assert warmup_multistep_factor(10, [100], 0.1, 0.3, 10, "constant") == pytest.approx(1.0)
    # fvcore's WarmupParamScheduler: ramp from wf * step(0) to step(warmup_iters)
    assert warmup_multistep_factor(5, [8], 0.1, 0.0, 10) == pytest.approx(0.5 * 0.1)
    cfg = _cfg(BASE_LR=1.0, WARMUP_ITERS=0, STEPS=(3, 99), MAX_ITER=10)
    assert _lrs(cfg, 5) == pytest.approx([1.0, 1.0, 1.0, 0.1, 0.1])


def test_scheduler_state_round_trips_through_weights_only_load(tmp_path):
    cfg = _cfg(BASE_LR=0.1, WARMUP_ITERS=5, STEPS=(7,), MAX_ITER=10)
    net = nn.Linear(2, 2)
    opt = build_optimizer(cfg, net)
    sched = build_lr_scheduler(cfg, opt)
    for _ in range(6):
        opt.step()
        sched.step()
    torch.save(sched.state_dict(), tmp_path / "s.pt")
    opt2 = build_optimizer(cfg, nn.Linear(2, 2))
    sched2 = build_lr_scheduler(cfg, opt2)
    sched2.load_state_dict(torch.load(tmp_path / "s.pt", weights_only=True))
    for _ in range(3):
        opt.step(), sched.step(), opt2.step(), sched2.step()
        assert opt2.param_groups[0]["lr"] == pytest.approx(opt.param_groups[0]["lr"])
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01)


def test_bad_schedule_values_are_rejected():
    with pytest.raises(ValueError, match="WARMUP_METHOD"):
        _lrs(_cfg(WARMUP_METHOD="cosine"), 1)
    with pytest.raises(ValueError, match="STEPS"):
        _lrs(_cfg(STEPS=(50, 10), MAX_ITER=100), 1)


def test_gradient_clipping_is_off_by_default_and_clips_when_enabled():
    cfg = get_cfg()
    p = nn.Parameter(torch.zeros(3))
    p.grad = torch.tensor([3.0, -4.0, 0.5])
    clip_gradients(cfg, [p])
    assert p.grad.tolist() == [3.0, -4.0, 0.5]
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 1.0
    clip_gradients(cfg, [p])
    assert p.grad.tolist() == [1.0, -1.0, 0.5]
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "full_model"
    q = nn.Parameter(torch.zeros(2))
    p.grad, q.grad = torch.tensor([3.0, 0.0, 0.0]), torch.tensor([0.0, 4.0])
    clip_gradients(cfg, [p, q])
    total = torch.cat([p.grad, q.grad]).norm()
    assert total == pytest.approx(1.0, rel=1e-4)
