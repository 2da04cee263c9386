"""Evaluation, side by side: the open-set evaluator vs pycocotools' COCOeval on the same predictions.

    .venv/bin/python benchmarks/bench_evaluation.py                   # 200 images (synthetic_test's size)
    .venv/bin/python benchmarks/bench_evaluation.py --images 500 --repeats 5

A generated COCO ground truth (256x256 images, rectangles with polygon masks, 10 categories of which 6
are known) and generated predictions (every object found with jitter: known objects under their class,
unknown ones as UNKNOWN_ID with a few mistakes, plus false positives), bbox and segm. Timed:
  open_set     OpenSetEvaluator(gt, known_ids, ("bbox", "segm")).evaluate(results) (AP_k, AOSE, AP_unk,
               AR_unk, WI; two COCOeval runs per type + the open-set error analysis), including its set-up
  cocoeval     plain COCOeval (evaluate + accumulate + summarize) per type on the same predictions, against
               the same relabelled GT (unknown categories -> 1000), including COCO() and loadRes()
Round-robin medians after warm-up.
"""
import argparse
import contextlib
import copy
import io
import os
import sys

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from semseg_core.constants import UNKNOWN_ID
from semseg_core.evaluation import OpenSetEvaluator

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import emit, interleaved_medians, machine, peak_rss_mb  # noqa: E402

NUM_CATEGORIES, NUM_KNOWN, SIDE = 10, 6, 256


def make_gt_and_results(num_images, objects=6, false_positives=10, seed=0):
    rng = np.random.default_rng(seed)
    images, annotations, results = [], [], []

    def rle_of(x0, y0, x1, y1):
        m = np.zeros((SIDE, SIDE), dtype=np.uint8, order="F")
        m[int(y0):int(y1), int(x0):int(x1)] = 1
        rle = mask_utils.encode(m)
        rle["counts"] = rle["counts"].decode("ascii")
        return rle

    def detection(image_id, category, score, x0, y0, x1, y1):
        return {"image_id": image_id, "category_id": category, "score": score,
                "bbox": [x0, y0, x1 - x0, y1 - y0], "segmentation": rle_of(x0, y0, x1, y1)}

    for image_id in range(1, num_images + 1):
        images.append({"id": image_id, "width": SIDE, "height": SIDE, "file_name": f"{image_id:06d}.png"})
        for _ in range(objects):
            w, h = rng.integers(20, 90, size=2)
            x0, y0 = rng.integers(0, SIDE - w), rng.integers(0, SIDE - h)
            x1, y1 = x0 + w, y0 + h
            category = int(rng.integers(1, NUM_CATEGORIES + 1))
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": category,
                                "bbox": [float(x0), float(y0), float(w), float(h)], "area": float(w * h),
                                "iscrowd": 0, "segmentation": [[x0, y0, x1, y0, x1, y1, x0, y1]]})
            jitter = rng.normal(0, 3, 4)
            known = category <= NUM_KNOWN
            predicted = category if known else UNKNOWN_ID
            if rng.random() < 0.1:  # some open-set mistakes
                predicted = UNKNOWN_ID if known else int(rng.integers(1, NUM_KNOWN + 1))
            results.append(detection(image_id, predicted, float(rng.uniform(0.3, 1.0)),
                                     *np.clip([x0 + jitter[0], y0 + jitter[1], x1 + jitter[2], y1 + jitter[3]],
                                              0, SIDE).round(1).tolist()))
        for _ in range(false_positives):
            w, h = rng.integers(10, 80, size=2)
            x0, y0 = rng.integers(0, SIDE - w), rng.integers(0, SIDE - h)
            category = int(rng.choice([UNKNOWN_ID] + list(range(1, NUM_KNOWN + 1))))
            results.append(detection(image_id, category, float(rng.uniform(0.0, 0.5)),
                                     float(x0), float(y0), float(x0 + w), float(y0 + h)))
    categories = [{"id": c, "name": f"class{c}"} for c in range(1, NUM_CATEGORIES + 1)]
    gt = {"images": images, "annotations": annotations, "categories": categories}
    return gt, results


def run_cocoeval(gt, results, iou_types=("bbox", "segm")):
    """Plain pycocotools evaluation per type, against the GT relabelled the open-set way (unknown -> 1000)."""
    stats = {}
    for iou_type in iou_types:
        data = copy.deepcopy(gt)
        for ann in data["annotations"]:
            if ann["category_id"] > NUM_KNOWN:
                ann["category_id"] = UNKNOWN_ID
        data["categories"] = data["categories"][:NUM_KNOWN] + [{"id": UNKNOWN_ID, "name": "unknown"}]
        drop = "bbox" if iou_type == "segm" else "segmentation"
        dets = [{k: v for k, v in d.items() if k != drop} for d in results]
        with contextlib.redirect_stdout(io.StringIO()):
            coco_gt = COCO()
            coco_gt.dataset = data
            coco_gt.createIndex()
            coco_dt = coco_gt.loadRes(dets)
            ev = COCOeval(coco_gt, coco_dt, iou_type)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        stats[iou_type] = round(float(ev.stats[0]) * 100, 2)
    return stats


def run_open_set(gt, results, iou_types=("bbox", "segm")):
    evaluator = OpenSetEvaluator(gt, list(range(1, NUM_KNOWN + 1)), iou_types)
    metrics = evaluator.evaluate(results)
    return {t: round(metrics[t]["AP_k"] if "AP_k" in metrics[t] else float("nan"), 2) for t in iou_types}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--json-out", default=None)
    args = parser.parse_args(argv)
    gt, results = make_gt_and_results(args.images)
    timed = interleaved_medians({"open_set": lambda: run_open_set(gt, results),
                                 "cocoeval": lambda: run_cocoeval(gt, results)}, "cpu", args.warmup, args.repeats)
    medians = {name: t[0] for name, t in timed.items()}
    print(f"evaluation of {len(results)} detections on {args.images} images ({len(gt['annotations'])} GT), "
          f"bbox + segm, {machine()}", file=sys.stderr)
    for name, (seconds, all_s, headline) in timed.items():
        print(f"  {name:9s} {seconds:7.2f} s  ({', '.join(f'{s:.2f}' for s in all_s)})  headline AP {headline} (open_set: AP_k; cocoeval: mAP over known + unknown)",
              file=sys.stderr)
    emit({"benchmark": "evaluation", "machine": machine(), "images": args.images, "detections": len(results),
          "gt_instances": len(gt["annotations"]), "repeats": args.repeats,
          "seconds": {k: round(v, 3) for k, v in medians.items()},
          "ratio": {"open_set/cocoeval": round(medians["open_set"] / medians["cocoeval"], 3)},
          "peak_rss_mb": round(peak_rss_mb(), 1)}, args.json_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
