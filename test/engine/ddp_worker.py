"""Run by test_engine_ddp.py: ``ddp_worker.py DUMP_DIR <train.py arguments>``. Parses the arguments like
training/train.py, spawns the processes with the engine's own ``launch`` (gloo on CPU) and saves every
rank's final weights, so that the test can compare the ranks."""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from semseg_core.engine import Trainer, get_rank, launch  # noqa: E402
from semseg_core.engine.cli import default_argument_parser, load_cfg, setup_logging  # noqa: E402
from semseg_core.engine.trainer import unwrap  # noqa: E402


def train_and_dump(args, dump_dir):
    cfg = load_cfg(args)
    setup_logging(cfg.OUTPUT_DIR, get_rank())
    trainer = Trainer(cfg, resume=args.resume)
    trainer.train()
    state = {k: v.detach().cpu() for k, v in unwrap(trainer.model).state_dict().items()}
    torch.save({"model": state, "world_size": torch.distributed.get_world_size()},
               os.path.join(dump_dir, f"rank{get_rank()}.pt"))


if __name__ == "__main__":
    dump_dir, argv = sys.argv[1], sys.argv[2:]
    args = default_argument_parser().parse_args(argv)
    launch(train_and_dump, args.num_gpus, backend="gloo", args=(args, dump_dir))
