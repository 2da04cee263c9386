"""SGD and the warmup + multistep learning-rate schedule, with detectron2's semantics.

detectron2 builds one parameter group per distinct (lr, weight_decay) pair: norm-layer parameters get
``SOLVER.WEIGHT_DECAY_NORM``; biases get ``BASE_LR * BIAS_LR_FACTOR`` and ``WEIGHT_DECAY_BIAS`` (only when
those differ from the defaults, and then they override the norm value, as in detectron2). The schedule is
evaluated per iteration: ``lr(it) = BASE_LR * warmup(it) * GAMMA ** (number of STEPS <= it)``.
"""
from __future__ import annotations

import bisect
import logging
from typing import Any, Dict, List, Sequence

import torch
from torch import nn

logger = logging.getLogger(__name__)

NORM_MODULE_TYPES = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
    nn.GroupNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    nn.LayerNorm,
    nn.LocalResponseNorm,
)


def _is_norm_module(module: nn.Module) -> bool:
    # FrozenBatchNorm variants (torchvision's or ours) are norm layers too; match them by name so that a
    # model-side implementation does not have to subclass anything.
    return isinstance(module, NORM_MODULE_TYPES) or "FrozenBatchNorm" in type(module).__name__


def _solver_value(solver, key: str, default):
    """Read an optional SOLVER key (older configs may lack our additions)."""
    return getattr(solver, key) if hasattr(solver, key) else default


def get_param_groups(
    model: nn.Module,
    base_lr: float,
    weight_decay: float,
    weight_decay_norm: float,
    bias_lr_factor: float = 1.0,
    weight_decay_bias: float | None = None,
) -> List[Dict[str, Any]]:
    """Parameter groups as detectron2's ``get_default_optimizer_params`` makes them.

    Only parameters with ``requires_grad`` are included; shared parameters appear once. Groups with equal
    hyper-parameters are merged, in order of first appearance (deterministic, so optimizer state dicts of two
    runs line up).
    """
    if weight_decay_bias is None:
        weight_decay_bias = weight_decay
    bias_overrides: Dict[str, float] = {}
    if bias_lr_factor != 1.0 or weight_decay_bias != weight_decay:
        bias_overrides = {"lr": base_lr * bias_lr_factor, "weight_decay": weight_decay_bias}

    seen = set()
    grouped: Dict[tuple, List[nn.Parameter]] = {}
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            hyper = {"lr": base_lr, "weight_decay": weight_decay}
            if _is_norm_module(module):
                hyper["weight_decay"] = weight_decay_norm
            if name == "bias":
                hyper.update(bias_overrides)
            grouped.setdefault((hyper["lr"], hyper["weight_decay"]), []).append(param)
    return [{"params": params, "lr": lr, "weight_decay": wd} for (lr, wd), params in grouped.items()]


def build_optimizer(cfg, model: nn.Module) -> torch.optim.Optimizer:
    """SGD over the trainable parameters of ``model`` from ``cfg.SOLVER``."""
    solver = cfg.SOLVER
    groups = get_param_groups(
        model,
        base_lr=float(solver.BASE_LR),
        weight_decay=float(solver.WEIGHT_DECAY),
        weight_decay_norm=float(solver.WEIGHT_DECAY_NORM),
        bias_lr_factor=float(_solver_value(solver, "BIAS_LR_FACTOR", 1.0)),
        weight_decay_bias=_solver_value(solver, "WEIGHT_DECAY_BIAS", None),
    )
    if not groups:
        raise ValueError("build_optimizer: the model has no parameter with requires_grad=True")
    return torch.optim.SGD(
        groups,
        lr=float(solver.BASE_LR),
        momentum=float(solver.MOMENTUM),
        nesterov=bool(_solver_value(solver, "NESTEROV", False)),
    )


def warmup_multistep_factor(
    iteration: int,
    milestones: Sequence[int],
    gamma: float,
    warmup_factor: float,
    warmup_iters: int,
    warmup_method: str = "linear",
) -> float:
    """The multiplier of BASE_LR at ``iteration`` (detectron2's WarmupParamScheduler over MultiStep).

    Warmup goes linearly from ``warmup_factor * step(0)`` to ``step(warmup_iters)`` (``constant``: stays at
    ``warmup_factor * step(0)``); from ``warmup_iters`` on it is ``gamma ** bisect_right(milestones, it)``.
    """

    def step_value(it: int) -> float:
        return gamma ** bisect.bisect_right(milestones, it)

    if iteration < warmup_iters:
        start = warmup_factor * step_value(0)
        if warmup_method == "constant":
            return start
        if warmup_method == "linear":
            alpha = iteration / warmup_iters
            return start + (step_value(warmup_iters) - start) * alpha
        raise ValueError(f"Unknown SOLVER.WARMUP_METHOD {warmup_method!r} (expected 'linear' or 'constant')")
    return step_value(iteration)


class WarmupMultiStepLR(torch.optim.lr_scheduler.LRScheduler):
    """Per-iteration warmup + multistep schedule; ``step()`` once after every optimizer step.

    Its state dict holds only numbers and lists, so it loads with ``torch.load(weights_only=True)``.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        milestones: Sequence[int],
        gamma: float = 0.1,
        warmup_factor: float = 0.001,
        warmup_iters: int = 1000,
        warmup_method: str = "linear",
        last_epoch: int = -1,
    ):
        milestones = [int(m) for m in milestones]
        if milestones != sorted(milestones):
            raise ValueError(f"SOLVER.STEPS must be increasing, got {milestones}")
        if warmup_method not in ("linear", "constant"):
            raise ValueError(f"Unknown SOLVER.WARMUP_METHOD {warmup_method!r} (expected 'linear' or 'constant')")
        self.milestones = milestones
        self.gamma = float(gamma)
        self.warmup_factor = float(warmup_factor)
        self.warmup_iters = int(warmup_iters)
        self.warmup_method = warmup_method
        super().__init__(optimizer, last_epoch)

    def factor(self, iteration: int) -> float:
        return warmup_multistep_factor(
            iteration, self.milestones, self.gamma, self.warmup_factor, self.warmup_iters, self.warmup_method
        )

    def get_lr(self) -> List[float]:
        f = self.factor(self.last_epoch)
        return [base_lr * f for base_lr in self.base_lrs]

    def _get_closed_form_lr(self) -> List[float]:
        return self.get_lr()


def build_lr_scheduler(cfg, optimizer: torch.optim.Optimizer) -> WarmupMultiStepLR:
    solver = cfg.SOLVER
    name = _solver_value(solver, "LR_SCHEDULER_NAME", "WarmupMultiStepLR")
    if name != "WarmupMultiStepLR":
        raise ValueError(f"SOLVER.LR_SCHEDULER_NAME {name!r} is not supported (only 'WarmupMultiStepLR')")
    max_iter = int(solver.MAX_ITER)
    steps = [int(s) for s in solver.STEPS if int(s) <= max_iter]
    if len(steps) != len(solver.STEPS):
        logger.warning("SOLVER.STEPS %s: steps beyond MAX_ITER=%d are ignored", list(solver.STEPS), max_iter)
    return WarmupMultiStepLR(
        optimizer,
        milestones=steps,
        gamma=float(solver.GAMMA),
        warmup_factor=float(solver.WARMUP_FACTOR),
        # detectron2 caps the warmup length at MAX_ITER
        warmup_iters=min(int(solver.WARMUP_ITERS), max_iter),
        warmup_method=str(_solver_value(solver, "WARMUP_METHOD", "linear")),
    )


def clip_gradients(cfg, params) -> None:
    """Apply ``SOLVER.CLIP_GRADIENTS`` (off by default, as in the authors' runs).

    As in detectron2, ``value`` and ``norm`` clip each parameter's gradient on its own; ``full_model``
    clips the norm of all gradients together.
    """
    clip = getattr(cfg.SOLVER, "CLIP_GRADIENTS", None)
    if clip is None or not bool(clip.ENABLED):
        return
    params = [p for p in params if p.grad is not None]
    clip_type = str(clip.CLIP_TYPE)
    value, norm_type = float(clip.CLIP_VALUE), float(clip.NORM_TYPE)
    if clip_type == "value":
        torch.nn.utils.clip_grad_value_(params, value)
    elif clip_type == "norm":
        for p in params:
            torch.nn.utils.clip_grad_norm_(p, value, norm_type=norm_type)
    elif clip_type == "full_model":
        torch.nn.utils.clip_grad_norm_(params, value, norm_type=norm_type)
    else:
        raise ValueError(f"Unknown SOLVER.CLIP_GRADIENTS.CLIP_TYPE {clip_type!r} "
                         "(expected 'value', 'norm' or 'full_model')")
