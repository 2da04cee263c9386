#!/usr/bin/env python
"""Open-set evaluation (SemSeg's COCO-style AP_k, AOSE, AP_unk, AR_unk@10/30/100, WI) from the command line.

(a) a COCO result file against a COCO ground-truth json:
    python training/evaluate.py --gt annotations.json --results coco_results.json --known-classes mug,banana --out out/eval
    python training/evaluate.py --dataset synthetic_test --results coco_results.json --out out/eval

(b) a model: the Predictor runs over the test set's images, writes coco_results.json, then evaluates:
    python training/evaluate.py --config-file config/models/Synthetic/semseg_tiny.yaml --out out/eval \\
        MODEL.WEIGHTS out/model_final.pth
    ... --dataset NAME (default: every cfg.DATASETS.TEST) or --gt FILE --image-root DIR [--known-classes ...]
    ... --force-known   ablation: unknown decision disabled (every detection goes to its nearest known class)
    ... --output raw,raw_published,instance_map   post-processed outputs side by side (default: raw)

Writes metrics.json, metrics.txt (the table), pr_curves.png, instances.json (per-object figures) (and
coco_results.json for a model) to --out; with several outputs one folder each plus outputs.txt (the side-by-side
table) and outputs.json. Outputs: raw = the authors' output with nothing dropped (what the paper's AP numbers
score); raw_published = the raw output at the node's score thresholds; instance_map = what the node publishes by
default (one instance per object).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
from functools import partial
from typing import List, Optional, Sequence

# run as a script from a checkout without `pip install`: make `semseg_core` importable
_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

from semseg_core.evaluation import (evaluate_and_report, format_metrics_table, load_results_json,  # noqa: E402
                                    unknown_decision_disabled)
from semseg_core import Predictor  # noqa: E402
from semseg_core.config import load_config  # noqa: E402
from semseg_core.data import get_dataset_meta  # noqa: E402
from semseg_core.data.image_io import read_image  # noqa: E402
from semseg_core.evaluation.coco_io import CocoFormatError, read_json  # noqa: E402
from semseg_core.evaluation.instance_metrics import format_instance_table  # noqa: E402
from semseg_core.evaluation.model_eval import (evaluate_model, evaluate_outputs,  # noqa: E402,F401  (re-exported)
                                               format_outputs_table)
from semseg_core.postprocess import PLANNER_DEFAULTS, PostprocessOptions  # noqa: E402

CLI_DATASET_NAME = "evaluate_cli_gt"


OUTPUT_NAMES = ("raw", "raw_published", "instance_map")


def output_presets(known_min_probability: Optional[float] = None) -> dict:
    """The named post-processings --output chooses from (the instance map at another known_min_probability when
    given: the node parameter of the same name)."""
    instance_map = PLANNER_DEFAULTS if known_min_probability is None else \
        dataclasses.replace(PLANNER_DEFAULTS, known_min_probability=known_min_probability)
    presets = {"raw": PostprocessOptions(), "raw_published": dataclasses.replace(PLANNER_DEFAULTS, output="raw"),
               "instance_map": instance_map}
    return {name: presets[name] for name in OUTPUT_NAMES}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gt", help="COCO ground-truth json (all categories; non-known ones are evaluated as unknown)")
    parser.add_argument("--results", help="COCO result json to evaluate (mode a)")
    parser.add_argument("--known-classes", help="comma-separated known category names, as in the GT json")
    parser.add_argument("--known-ids", help="comma-separated known category ids (instead of --known-classes)")
    parser.add_argument("--dataset", help="a registered dataset name (semseg_core.data catalogue)")
    parser.add_argument("--image-root", help="image folder of --gt (mode b)")
    parser.add_argument("--config-file", help="model config YAML (mode b)")
    parser.add_argument("--force-known", action="store_true",
                        help="ablation: disable the unknown decision (mode b)")
    parser.add_argument("--output", default="raw",
                        help="mode b: comma-separated post-processed outputs to evaluate side by side: raw, "
                             "raw_published, instance_map (default raw)")
    parser.add_argument("--known-min-probability", type=float, default=None,
                        help="mode b: the instance map's known_min_probability (default: the node's, "
                             f"{PLANNER_DEFAULTS.known_min_probability:g})")
    parser.add_argument("--iou-types", default="auto",
                        help="bbox, segm or bbox,segm; auto = segm too when every result has a mask")
    parser.add_argument("--out", required=True, help="output folder for metrics.json, metrics.txt, pr_curves.png")
    parser.add_argument("--device", default=None, help="mode b: cpu or cuda (default: MODEL.DEVICE)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=[],
                        help="mode b: config overrides as KEY VALUE pairs, e.g. MODEL.WEIGHTS out/model_final.pth")
    return parser


def _split(text: Optional[str]) -> List[str]:
    return [t.strip() for t in text.split(",") if t.strip()] if text else []


def resolve_known_ids(gt_path: str, names: Sequence[str], ids: Sequence[str]) -> List[int]:
    """Known category ids from names (exact, as in the json) or ids; errors name the file and the bad entries."""
    data = read_json(gt_path, "Ground-truth annotation")
    categories = data.get("categories") if isinstance(data, dict) else None
    if not isinstance(categories, list):
        raise CocoFormatError(f"{gt_path}: missing or non-list field 'categories'")
    by_name = {str(c.get("name")): c.get("id") for c in categories if isinstance(c, dict)}
    if ids:
        try:
            return sorted(int(i) for i in ids)
        except ValueError as e:
            raise ValueError(f"--known-ids must be integers: {e}") from e
    missing = [n for n in names if n not in by_name]
    if missing:
        raise ValueError(f"known classes {missing} are not category names of {gt_path}; "
                         f"its categories are: {', '.join(sorted(by_name))}")
    return sorted(int(by_name[n]) for n in names)


def _iou_types(arg: str, results: list) -> tuple:
    if arg != "auto":
        types = tuple(_split(arg))
        if not types or any(t not in ("bbox", "segm") for t in types):
            raise ValueError(f"--iou-types must be bbox, segm or bbox,segm; got {arg!r}")
        return types
    has_masks = bool(results) and all(isinstance(r, dict) and r.get("segmentation") for r in results)
    return ("bbox", "segm") if has_masks else ("bbox",)


def _gt_and_known(args, cfg=None) -> tuple:
    """(json_file, known_category_ids, image_root) from --dataset or --gt + --known-classes/--known-ids."""
    if args.dataset:
        meta = get_dataset_meta(args.dataset, cfg)
        return meta["json_file"], list(meta["known_category_ids"]), meta.get("image_root")
    if not args.gt:
        raise ValueError("give --gt FILE (with --known-classes or --known-ids) or --dataset NAME")
    if not (args.known_classes or args.known_ids):
        raise ValueError("--gt needs --known-classes a,b,c or --known-ids 1,2,3")
    return args.gt, resolve_known_ids(args.gt, _split(args.known_classes), _split(args.known_ids)), args.image_root


def evaluate_results_file(args) -> dict:
    """Mode (a)."""
    gt, known, _ = _gt_and_known(args)
    results = load_results_json(args.results)
    return evaluate_and_report(gt, known, results, args.out, _iou_types(args.iou_types, results),
                               title=os.path.basename(args.results), results_source=args.results)


def _check_model_classes(predictor, gt_json: str, known_ids: Sequence[int]) -> None:
    """The model's row k must be the k-th known id of the json, or every class would be mislabelled."""
    categories = {c["id"]: str(c.get("name")) for c in read_json(gt_json, "Ground-truth annotation")["categories"]}
    gt_names = [categories.get(i, f"<id {i} missing>") for i in sorted(known_ids)]
    if gt_names != list(predictor.class_names):
        raise ValueError(f"the model's known classes {list(predictor.class_names)} are not the known classes of "
                         f"{gt_json} in category-id order {gt_names}")


def evaluate_with_model(args) -> dict:
    """Mode (b): Predictor over the test images of each dataset, then evaluation."""

    cfg = load_config(args.config_file, list(args.opts or []))
    predictor = Predictor(config=cfg, weights=cfg.MODEL.WEIGHTS or None, device=args.device or cfg.MODEL.DEVICE)
    if args.gt:
        if not (args.known_classes or args.known_ids):  # default: the model's own known classes
            args.known_classes = ",".join(predictor.class_names)
        gt, known, image_root = _gt_and_known(args, cfg)
        if not image_root:
            raise ValueError("mode b with --gt needs --image-root DIR (where the json's file_name entries are)")
        jobs = [(os.path.splitext(os.path.basename(gt))[0], gt, known, image_root)]
    else:
        names = [args.dataset] if args.dataset else list(cfg.DATASETS.TEST)
        if not names:
            raise ValueError("no test dataset: give --dataset NAME, --gt FILE --image-root DIR or DATASETS.TEST")
        jobs = []
        for name in names:
            args.dataset = name
            jobs.append((name, *_gt_and_known(args, cfg)))
    presets = output_presets(args.known_min_probability)
    wanted = _split(args.output)
    bad = [w for w in wanted if w not in presets]
    if not wanted or bad:
        raise ValueError(f"--output must name outputs among {', '.join(presets)}; got {args.output!r}")
    all_metrics = {}
    for name, gt, known, image_root in jobs:
        _check_model_classes(predictor, gt, known)
        out_dir = args.out if len(jobs) == 1 else os.path.join(args.out, name)
        print(f"{name}: running the model over the images of {gt}", file=sys.stderr)
        ablation = unknown_decision_disabled(predictor.model) if args.force_known else contextlib.nullcontext()
        iou_types = ("bbox", "segm") if cfg.MODEL.MASK_ON else ("bbox",)
        title = name + (" (unknown decision disabled)" if args.force_known else "")
        with ablation:
            outputs = evaluate_outputs(predictor, gt, image_root, known, {w: presets[w] for w in wanted}, out_dir,
                                       partial(read_image, image_format="RGB", listed_in=gt), iou_types, title=title)
        all_metrics[name] = outputs if len(outputs) > 1 else next(iter(outputs.values()))
    return all_metrics if len(jobs) > 1 else all_metrics[jobs[0][0]]


def _is_metrics(m) -> bool:
    return isinstance(m, dict) and ("bbox" in m or "segm" in m)


def format_any(metrics: dict, name: str = "") -> str:
    """The table of one output, of several outputs side by side, or of each dataset (then '== name' headers)."""
    head = f"== {name}\n" if name else ""
    if _is_metrics(metrics):
        text = format_metrics_table({k: v for k, v in metrics.items() if k in ("bbox", "segm")})
        if "instances" in metrics:
            text += "\n\n" + format_instance_table({"": metrics["instances"]})
        return head + text
    if set(metrics) <= set(OUTPUT_NAMES) and all(_is_metrics(m) for m in metrics.values()):  # outputs of a dataset
        return head + format_outputs_table(metrics)
    return "\n".join(format_any(m, k) for k, m in metrics.items())


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if bool(args.results) == bool(args.config_file):
        parser.error("give exactly one of --results FILE (evaluate a result file) or --config-file CFG (a model)")
    if args.force_known and not args.config_file:
        parser.error("--force-known needs a model (--config-file)")
    try:
        metrics = evaluate_results_file(args) if args.results else evaluate_with_model(args)
    except (ValueError, FileNotFoundError, KeyError) as err:  # CocoFormatError, DatasetError, ConfigError ...
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_any(metrics))
    print(f"\nwritten to {os.path.abspath(args.out)}: metrics.json, metrics.txt, pr_curves.png", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
