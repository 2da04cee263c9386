#!/usr/bin/env python
"""Train or evaluate SemSeg (the seed's command line); see ``--help``.

    python training/train.py --config-file config/models/Synthetic/semseg_tiny.yaml OUTPUT_DIR out
"""
import os
import sys

# run as a script from a checkout without `pip install`: make `semseg_core` importable
_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

from semseg_core.engine.cli import main  # noqa: E402

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
