"""Training engine: optimizer/scheduler, DDP launch, checkpoints with exact resume, the training loop."""
from .cli import default_argument_parser, main
from .distributed import get_rank, get_world_size, launch
from .optim import WarmupMultiStepLR, build_lr_scheduler, build_optimizer
from .trainer import Trainer, evaluate_weights

__all__ = [
    "Trainer",
    "WarmupMultiStepLR",
    "build_lr_scheduler",
    "build_optimizer",
    "default_argument_parser",
    "evaluate_weights",
    "get_rank",
    "get_world_size",
    "launch",
    "main",
]
