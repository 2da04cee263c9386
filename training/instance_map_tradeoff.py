#!/usr/bin/env python
"""The instance map's main threshold against what a planner is told: known_min_probability (the class probability an
object needs for a known label) swept over COCO test sets; per set, unknown objects found as unknown, unknown
objects labelled known and known objects found with their class (per object, IoU >= 0.5).

    python training/instance_map_tradeoff.py --out docs/instance_map_tradeoff.png \\
        --set "demo scenes (seed 2024)" demo/annotations.json demo/images \\
        --set "held-out (seed 9091)" heldout/annotations.json heldout/images

The model runs once per image; every threshold post-processes the same detections (the node's other defaults).
Writes the PNG and a JSON of the figures next to it.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from typing import List, Optional, Sequence

import cv2
import torch
from matplotlib.figure import Figure  # the object API: no pyplot, no global backend switch


_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

from semseg_core import Predictor  # noqa: E402
from semseg_core.evaluation.coco_io import read_json  # noqa: E402
from semseg_core.evaluation.instance_metrics import OpenSetCounts, gt_label_image, open_set_counts  # noqa: E402
from semseg_core.postprocess import PLANNER_DEFAULTS  # noqa: E402

THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.97, 0.99, 0.995)
CURVES = (("unknown_recall", "unknown found as unknown", "-"),
          ("unknown_labelled_known", "unknown labelled known", ":"),
          ("known_recall", "known found with its class", "--"))


def sweep(predictor, gt_json: str, image_root: str, thresholds: Sequence[float]) -> List[dict]:
    """Per threshold: the per-object rates (instance_metrics.OpenSetCounts.rates) over the set."""
    data = read_json(gt_json, "Ground-truth annotation")
    known_ids = sorted(c["id"] for c in data["categories"] if c["name"] in predictor.class_names)
    anns_of: dict = {}
    for ann in data["annotations"]:
        anns_of.setdefault(ann["image_id"], []).append(ann)
    totals = [OpenSetCounts() for _ in thresholds]
    options = [dataclasses.replace(PLANNER_DEFAULTS, known_min_probability=float(t)) for t in thresholds]
    for img in data["images"]:
        path = os.path.join(image_root, img["file_name"])
        bgr = cv2.imread(path)
        if bgr is None:
            raise FileNotFoundError(f"cannot read image {path}")
        raw = predictor.raw_outputs([bgr], color="bgr")[0]
        gt, gt_classes = gt_label_image(anns_of.get(img["id"], []), img["height"], img["width"], known_ids)
        for total, option in zip(totals, options):
            result = predictor.result_from(raw, option, masks=False)
            total.add(open_set_counts(result.label_image, {k + 1: int(c) for k, c in enumerate(result.class_ids)},
                                      gt, gt_classes))
    return [dict(threshold=float(t), **total.rates()) for t, total in zip(thresholds, totals)]


def plot(figures: dict, path: str, chosen: float) -> None:
    fig = Figure(figsize=(5.2 * len(figures), 4))
    axes = fig.subplots(1, len(figures), squeeze=False)
    for ax, (label, rows) in zip(axes[0], figures.items()):
        x = [r["threshold"] for r in rows]
        for key, name, style in CURVES:
            ax.plot(x, [100 * r[key] for r in rows], style, marker="o", label=name)
        ax.axvline(chosen, color="grey", linewidth=0.8)
        ax.text(chosen, 2, f" used {chosen:g}", color="grey", fontsize=8)
        ax.set_xlabel("known_min_probability")
        ax.set_ylabel("% of objects")
        ax.set_ylim(0, 100)
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0][0].legend(loc="center left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", nargs=3, action="append", required=True, metavar=("LABEL", "JSON", "IMAGE_ROOT"),
                        help="a COCO test set: its label in the plot, annotation json, image folder (repeatable)")
    parser.add_argument("--out", required=True, help="PNG to write (a .json of the figures is written next to it)")
    parser.add_argument("--weights", default=None, help="model checkpoint (default: the embedded tiny model)")
    parser.add_argument("--mark", type=float, default=PLANNER_DEFAULTS.known_min_probability,
                        help="the value to mark as used (default: the node's default)")
    parser.add_argument("--thresholds", default=",".join(f"{t:g}" for t in THRESHOLDS),
                        help="comma-separated known_min_probability values")
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    try:
        thresholds = [float(t) for t in args.thresholds.split(",") if t.strip()]
        predictor = Predictor(weights=args.weights)
        figures = {label: sweep(predictor, gt_json, root, thresholds) for label, gt_json, root in args.set}
    except (ValueError, OSError, KeyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    plot(figures, args.out, args.mark)
    with open(os.path.splitext(args.out)[0] + ".json", "w", encoding="utf-8") as f:
        json.dump(figures, f, indent=1)
    for label, rows in figures.items():
        print(f"== {label}\n{'threshold':>10}" + "".join(f"{name:>28}" for _, name, _ in CURVES))
        for r in rows:
            print(f"{r['threshold']:>10g}" + "".join(f"{100 * r[key]:>27.1f}%" for key, _, _ in CURVES))
    return 0


if __name__ == "__main__":
    sys.exit(main())
