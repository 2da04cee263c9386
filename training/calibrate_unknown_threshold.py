#!/usr/bin/env python
"""Calibrate MODEL.DML.UNK_THR on held-out images of the *known* classes.

The authors' 0.085 suits their fully trained R50 (known embeddings within cosine distance ~0.05 of their
prototype). A model trained much shorter, e.g. the tiny CPU model, keeps its known embeddings farther out,
and 0.085 then calls most known objects unknown. This tool runs the model with the unknown decision
disabled over a labelled set of known objects only (no test data), takes, for every ground-truth object, the
distance to the nearest prototype of the best-scoring detection that overlaps it (IoU >= 0.5), and suggests
the given quantile of those distances as UNK_THR:

    python training/calibrate_unknown_threshold.py --config-file config/models/Synthetic/semseg_tiny.yaml \\
        --synthetic-val 100 --seed 7 MODEL.WEIGHTS out/model_final.pth

(`--gt FILE --image-root DIR` for your own known-only validation set.) Prints the distance quantiles and the
suggested value; `--write-config FILE` writes a YAML that inherits the given config and sets it.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from typing import List, Optional, Sequence

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torchvision.ops import box_iou  # noqa: E402

from semseg_core import Predictor  # noqa: E402
from semseg_core.config import load_config  # noqa: E402
from semseg_core.data.synthetic import generate_dataset  # noqa: E402
from semseg_core.evaluation import unknown_decision_disabled  # noqa: E402
from semseg_core.evaluation.coco_io import read_json  # noqa: E402
from semseg_core.data.image_io import read_image  # noqa: E402


def known_object_distances(predictor, gt: dict, image_root: str, known_ids: Sequence[int],
                           iou_threshold: float = 0.5) -> np.ndarray:
    """Nearest-prototype distance of the top detection on each known GT object (objects never found are skipped)."""
    by_image = {}
    for ann in gt["annotations"]:
        if ann["category_id"] in known_ids and not ann.get("iscrowd", 0):
            x, y, w, h = ann["bbox"]
            by_image.setdefault(ann["image_id"], []).append([x, y, x + w, y + h])
    distances: List[float] = []
    with unknown_decision_disabled(predictor.model):
        for img in gt["images"]:
            boxes = by_image.get(img["id"])
            if not boxes:
                continue
            result = predictor(read_image(os.path.join(image_root, img["file_name"]), "RGB"))
            if len(result) == 0:
                continue
            iou = box_iou(torch.as_tensor(boxes, dtype=torch.float32), torch.from_numpy(result.boxes))
            for row in iou:
                hits = torch.nonzero(row >= iou_threshold).flatten().numpy()
                if len(hits):
                    best = hits[np.argmax(result.scores[hits])]
                    distances.append(float(result.unknown_scores[best]))
    return np.asarray(distances, dtype=np.float64)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, help="model config YAML")
    parser.add_argument("--gt", help="COCO json of a known-only validation set")
    parser.add_argument("--image-root", help="image folder of --gt")
    parser.add_argument("--synthetic-val", type=int, default=0,
                        help="instead of --gt: generate this many synthetic images of the known families")
    parser.add_argument("--seed", type=int, default=7, help="seed of the synthetic validation set (not a train/test seed)")
    parser.add_argument("--quantile", type=float, default=0.9,
                        help="share of known objects that must stay known (default 0.9)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: MODEL.DEVICE)")
    parser.add_argument("--write-config", help="write a YAML inheriting --config-file with the calibrated UNK_THR")
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE overrides, e.g. MODEL.WEIGHTS w.pth")
    args = parser.parse_args(argv)
    if not 0.0 < args.quantile < 1.0:
        parser.error("--quantile must be in (0, 1)")
    if bool(args.gt) == bool(args.synthetic_val):
        parser.error("give --gt FILE --image-root DIR, or --synthetic-val N")

    cfg = load_config(args.config_file, list(args.opts or []))
    predictor = Predictor(config=cfg, weights=cfg.MODEL.WEIGHTS or None, device=args.device or cfg.MODEL.DEVICE)
    with tempfile.TemporaryDirectory(prefix="semseg_calib_") as tmp:
        if args.synthetic_val:
            syn = cfg.DATASETS.SYNTHETIC
            generate_dataset(tmp, args.synthetic_val, args.seed, known_families=tuple(syn.KNOWN_FAMILIES),
                             unknown_families=tuple(syn.UNKNOWN_FAMILIES), openness=0.0,
                             image_size=int(syn.IMAGE_SIZE), split="train")
            gt_path, image_root = os.path.join(tmp, "annotations.json"), os.path.join(tmp, "images")
        else:
            gt_path, image_root = args.gt, args.image_root or os.path.dirname(args.gt)
        gt = read_json(gt_path, "Ground-truth annotation")
        names = {c["name"]: c["id"] for c in gt["categories"]}
        missing = [n for n in predictor.class_names if n not in names]
        if missing:
            print(f"error: known classes {missing} are not categories of {gt_path}", file=sys.stderr)
            return 2
        distances = known_object_distances(predictor, gt, image_root, [names[n] for n in predictor.class_names])
    if len(distances) == 0:
        print("error: the model found none of the known objects; nothing to calibrate", file=sys.stderr)
        return 2
    suggested = float(np.quantile(distances, args.quantile))
    qs = {q: float(np.quantile(distances, q)) for q in (0.5, 0.8, 0.9, 0.95)}
    print(f"known objects found: {len(distances)}; nearest-prototype distance quantiles: "
          + ", ".join(f"{int(q * 100)}%={v:.3f}" for q, v in qs.items()))
    print(f"current MODEL.DML.UNK_THR = {cfg.MODEL.DML.UNK_THR}; suggested (quantile {args.quantile}) = {suggested:.4f}")
    if args.write_config:
        base = os.path.relpath(os.path.abspath(args.config_file), os.path.dirname(os.path.abspath(args.write_config)))
        with open(args.write_config, "w") as f:
            f.write(f"# UNK_THR calibrated by training/calibrate_unknown_threshold.py (quantile {args.quantile})\n"
                    f"_BASE_: {base}\nMODEL:\n  DML:\n    UNK_THR: {suggested:.4f}\n")
        print(f"written {args.write_config}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
