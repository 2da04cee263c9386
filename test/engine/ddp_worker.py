"""Run by test_engine_ddp.py: trains the tiny model in 2 CPU processes (gloo) through the engine's own
``launch`` and saves every rank's final weights, so the test can compare them."""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from semseg_core.config import load_config  # noqa: E402
from semseg_core.engine import Trainer, get_rank, launch  # noqa: E402
from semseg_core.engine.trainer import unwrap  # noqa: E402


def train_and_dump(config_file, overrides, dump_dir):
    cfg = load_config(config_file, overrides)
    trainer = Trainer(cfg)
    trainer.train()
    state = {k: v.detach().cpu() for k, v in unwrap(trainer.model).state_dict().items()}
    torch.save({"model": state, "world_size": torch.distributed.get_world_size()},
               os.path.join(dump_dir, f"rank{get_rank()}.pt"))


if __name__ == "__main__":
    config_file, dump_dir, *overrides = sys.argv[1:]
    launch(train_and_dump, 2, backend="gloo", args=(config_file, overrides, dump_dir))
