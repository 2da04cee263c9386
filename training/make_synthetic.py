#!/usr/bin/env python
"""Generate the synthetic open-set train/test sets a config asks for (DATASETS.ROOT, DATASETS.SYNTHETIC.*).

    python training/make_synthetic.py --config-file config/models/Synthetic/semseg_tiny.yaml
    python training/make_synthetic.py --config-file ... DATASETS.SYNTHETIC.TEST_SEED 7 DATASETS.ROOT /data

Training does this on first use; this command does it ahead of time. Sets that already match are left alone.
For a free-standing set use `python -m semseg_core.data.synthetic --help`.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a source checkout

from semseg_core.config import load_config  # noqa: E402
from semseg_core.data.synthetic import ensure_synthetic_dataset  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", required=True, help="model config (YAML)")
    parser.add_argument("--splits", default="train,test", help="comma-separated: train, test")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parser.parse_args(argv)
    cfg = load_config(args.config_file, args.opts)
    names = [f"synthetic_{s.strip()}" for s in args.splits.split(",") if s.strip()]
    for path in ensure_synthetic_dataset(cfg, names=names):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
