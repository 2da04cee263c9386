#!/usr/bin/env python
"""Start a model of one config from another model's checkpoint: every tensor whose name and shape agree is copied,
the rest (e.g. the classifier and prototypes of a different known-class count) keep their fresh initialisation.

    python training/init_from_checkpoint.py --config-file config/models/Tabletop/semseg_tiny.yaml \\
        --source semseg_core/assets/semseg_tiny_synthetic.pt --out output/tabletop_init.pt

Then train with ``MODEL.WEIGHTS output/tabletop_init.pt``. Prints what was copied and what was not.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a source checkout

import torch  # noqa: E402

from semseg_core.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from semseg_core.config import load_config  # noqa: E402
from semseg_core.modeling import build_model  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", required=True, help="config of the new model")
    parser.add_argument("--source", required=True, help="checkpoint (ours) to copy matching tensors from")
    parser.add_argument("--out", required=True, help="checkpoint to write")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fresh initialisation")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parser.parse_args(argv)
    cfg = load_config(args.config_file, args.opts)
    torch.manual_seed(args.seed)
    model = build_model(cfg)
    source = load_checkpoint(args.source)
    if not isinstance(source.get("model"), dict):
        parser.error(f"{args.source}: not one of our checkpoints (no 'model' state dict)")
    state = model.state_dict()
    copied, kept = [], []
    for name, value in state.items():
        other = source["model"].get(name)
        if other is not None and tuple(other.shape) == tuple(value.shape):
            state[name] = other.to(value.dtype)
            copied.append(name)
        else:
            kept.append(name)
    model.load_state_dict(state, strict=True)
    save_checkpoint(args.out, model, cfg, init_source=os.path.abspath(args.source))
    print(f"copied {len(copied)} tensors from {args.source}; fresh: {', '.join(kept) or 'none'}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
