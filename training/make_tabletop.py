#!/usr/bin/env python
"""Render tabletop RGB-D open-set scenes from meshes: the built-in household set or your own mesh folder.

    python training/make_tabletop.py --out datasets/tabletop/train --split train --num-images 300 --seed 0
    python training/make_tabletop.py --out datasets/tabletop/test --split test --num-images 50 --seed 1
    python training/make_tabletop.py --out my_set/train --meshes my_objects --mesh-unit-scale 0.001 --split train

Your mesh folder holds known/<class>.obj|.stl (classes to learn) and unknown/<class>.obj|.stl (met only at
test time). Same as `python -m semseg_core.data.tabletop`; `--help` lists the camera and clutter options.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a source checkout

from semseg_core.data.tabletop import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(prog="training/make_tabletop.py"))
