"""The seed's training command line (detectron2's ``default_argument_parser`` + ``launch``)."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any, Optional, Sequence

from semseg_core.config import ConfigError, load_config

from . import distributed as comm
from .trainer import Trainer, evaluate_weights

logger = logging.getLogger("semseg_core")

EPILOG = """examples:
  train:            python training/train.py --config-file config/models/Synthetic/semseg_tiny.yaml OUTPUT_DIR out
  resume:           python training/train.py --config-file CFG --resume OUTPUT_DIR out
  evaluate:         python training/train.py --config-file CFG --eval-only MODEL.WEIGHTS out/model_final.pth
  4 GPUs:           python training/train.py --config-file CFG --num-gpus 4
  torchrun:         torchrun --nproc_per_node 4 training/train.py --config-file CFG
  2 machines:       (on each) python training/train.py --config-file CFG --num-gpus 8 --num-machines 2 \\
                        --machine-rank R --dist-url tcp://IP_OF_MACHINE_0:29500
"""


def default_argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Train or evaluate SemSeg (open-set instance segmentation).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config-file", default="", metavar="FILE", help="path to the YAML config")
    parser.add_argument("--resume", action="store_true",
                        help="continue from OUTPUT_DIR/last_checkpoint (model, optimizer, scheduler, iteration, "
                             "RNG and data order); without it training starts from iteration 0")
    parser.add_argument("--eval-only", action="store_true", help="only evaluate MODEL.WEIGHTS on DATASETS.TEST")
    parser.add_argument("--num-gpus", type=int, default=1,
                        help="processes per machine (one per GPU; with MODEL.DEVICE cpu: CPU processes, gloo)")
    parser.add_argument("--num-machines", type=int, default=1, help="total number of machines")
    parser.add_argument("--machine-rank", type=int, default=0, help="rank of this machine (0..num-machines-1)")
    parser.add_argument("--dist-url", default="auto",
                        help="init URL of the process group, tcp://IP:PORT of machine 0; 'auto' on one machine. "
                             "Under torchrun the environment is used instead")
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=[],
                        help="config overrides as KEY VALUE pairs, e.g. SOLVER.BASE_LR 0.01 OUTPUT_DIR out")
    return parser


def load_cfg(args: argparse.Namespace):
    if args.config_file and not os.path.isfile(args.config_file):
        raise FileNotFoundError(f"--config-file {args.config_file!r} does not exist")
    return load_config(args.config_file or None, list(args.opts or []))


def setup_logging(output_dir: str, rank: int) -> None:
    """INFO to stderr on the main process (warnings elsewhere) and everything to OUTPUT_DIR/log.txt[.rankN]."""
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for handler in list(root.handlers):
        if getattr(handler, "_semseg", False):
            root.removeHandler(handler)
            handler.close()
    fmt = logging.Formatter(f"[%(asctime)s r{rank} %(name)s %(levelname)s] %(message)s", "%m/%d %H:%M:%S")
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    handlers: list = [console]
    os.makedirs(output_dir, exist_ok=True)
    log_file = os.path.join(output_dir, "log.txt" if rank == 0 else f"log.txt.rank{rank}")
    handlers.append(logging.FileHandler(log_file))
    for handler in handlers:
        handler.setFormatter(fmt)
        handler._semseg = True  # type: ignore[attr-defined]
        root.addHandler(handler)


def run(args: argparse.Namespace) -> Any:
    """What every process runs (importable, so ``torch.multiprocessing`` can spawn it)."""
    cfg = load_cfg(args)
    setup_logging(cfg.OUTPUT_DIR, comm.get_rank())
    logger.info("Command line: %s", " ".join(sys.argv))
    if args.eval_only:
        return evaluate_weights(cfg)
    return Trainer(cfg, resume=args.resume).train()


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = default_argument_parser()
    args = parser.parse_args(argv)
    try:
        cfg = load_cfg(args)  # validate the config and overrides before any process is spawned
    except (ConfigError, FileNotFoundError) as err:
        parser.error(str(err))
    comm.launch(
        run,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        backend=comm.backend_for_device(cfg.MODEL.DEVICE),
        args=(args,),
    )
    return 0
