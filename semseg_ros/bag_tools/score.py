"""Score a recorded output bag against the ground truth of the bag that was replayed.

    semseg-score-bag --recording out/recording --report out/report

Each answered frame's Detection2DArray + mono16 label image (matched by header stamp) is turned into
COCO results and evaluated with the open-set evaluator over *every* frame of the input bag, so a frame
the node never answered counts as one with no detections. The label images are also scored per object
(Overlap / Boundary P/R/F after one-to-one matching, objects with F >= 0.75, known / unknown objects found
and mislabelled, detections per object, detections without pixels). class_id is decoded through the
recorded ~/label_info (numeric ids) or taken as a class name. Latency is input publish -> output receipt
(the later of the two outputs); throughput is answered frames over the time from the first publish to
the last answer.
"""
import argparse
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from semseg_core.constants import UNKNOWN_ID, UNKNOWN_NAME
from semseg_core.evaluation import OpenSetEvaluator, results_from_label_image
from semseg_core.evaluation.instance_metrics import InstanceMapEvaluator, gt_label_image
from semseg_ros.bag_tools.bag_io import BagError
from semseg_ros.bag_tools.make_bag import load_groundtruth
from semseg_ros.bag_tools.recording import Recording, answered_stamps, decode_frame, load_recording
from semseg_ros.bag_tools.report import format_summary, write_report

LATENCY_PERCENTILES = (50, 90, 95, 99)


def coco_results(recording: Recording, groundtruth: Dict) -> List[dict]:
    """COCO result dicts of every answered frame that belongs to the ground truth."""
    image_of_stamp = {f["stamp_ns"]: f["image_id"] for f in groundtruth["frames"]}
    names = groundtruth["known_class_names"]
    results = []
    for stamp in answered_stamps(recording):
        if stamp not in image_of_stamp:
            continue
        frame = decode_frame(recording, stamp)
        try:
            results += results_from_label_image(
                frame.label_image, frame.boxes_cxcywh, frame.scores, frame.class_names, image_of_stamp[stamp],
                groundtruth["known_category_ids"], class_names=names, instance_ids=frame.instance_ids,
                box_format="cxcywh")
        except ValueError as error:
            raise BagError(f"frame at stamp {stamp} (image {image_of_stamp[stamp]}): {error}; the node's "
                           f"classes must be the ground truth's known classes {names}") from error
    return results


def instance_metrics(recording: Recording, groundtruth: Dict) -> Dict:
    """Per-object figures of the published label images (semseg_core.evaluation.instance_metrics) over every
    frame of the ground truth; a frame without an answer counts as one with nothing found."""
    coco = groundtruth["coco"]
    names = groundtruth["known_class_names"]
    anns_of: Dict[int, list] = {}
    for ann in coco["annotations"]:
        anns_of.setdefault(ann["image_id"], []).append(ann)
    size_of = {im["id"]: (im["height"], im["width"]) for im in coco["images"]}
    answered = set(answered_stamps(recording))
    evaluator = InstanceMapEvaluator()
    for frame in groundtruth["frames"]:
        height, width = size_of[frame["image_id"]]
        gt, gt_classes = gt_label_image(anns_of.get(frame["image_id"], []), height, width,
                                        groundtruth["known_category_ids"])
        if frame["stamp_ns"] in answered:
            out = decode_frame(recording, frame["stamp_ns"])
            if out.label_image.shape != gt.shape:
                raise BagError(f"frame at stamp {frame['stamp_ns']}: label image {out.label_image.shape} but the "
                               f"image is {gt.shape}")
            unknown = [name for name in out.class_names if name != UNKNOWN_NAME and name not in names]
            if unknown:
                raise BagError(f"frame at stamp {frame['stamp_ns']}: classes {sorted(set(unknown))} are not the "
                               f"ground truth's known classes {names}")
            classes = {i: (names.index(name) if name != UNKNOWN_NAME else UNKNOWN_ID)
                       for i, name in zip(out.instance_ids, out.class_names)}
            evaluator.add(out.label_image, classes, gt, gt_classes)
        else:
            evaluator.add(np.zeros_like(gt), {}, gt, gt_classes)
    return evaluator.summary()


def timing(recording: Recording, groundtruth: Dict) -> Dict:
    """Frame accounting, latency percentiles (ms) and throughput (answered frames per second)."""
    bag_stamps = [f["stamp_ns"] for f in groundtruth["frames"]]
    answered = set(answered_stamps(recording))
    sent = set(recording.sent_ns)
    latencies = []
    for stamp in sorted(answered & sent):
        receipt = max(recording.detections[stamp].receipt_ns, recording.masks[stamp].receipt_ns)
        latencies.append((receipt - recording.sent_ns[stamp]) / 1e6)
    lat = np.asarray(latencies, np.float64)
    frames = {
        "in_bag": len(bag_stamps),
        "sent": len(sent & set(bag_stamps)),
        "answered": len(answered & set(bag_stamps)),
        "unanswered": len((sent & set(bag_stamps)) - answered),
        "not_sent": len(set(bag_stamps) - sent) if sent else None,
        "partial": len((set(recording.detections) ^ set(recording.masks)) & set(bag_stamps)),
        "duplicate_outputs": recording.duplicates,
        "outputs_not_in_bag": len(answered - set(bag_stamps)),
    }
    latency = {"count": int(lat.size)}
    if lat.size:
        latency.update({f"p{p}_ms": float(np.percentile(lat, p)) for p in LATENCY_PERCENTILES})
        latency.update(mean_ms=float(lat.mean()), max_ms=float(lat.max()), min_ms=float(lat.min()))
    throughput = None
    if answered and sent:
        first = min(recording.sent_ns.values())
        last = max(max(recording.detections[s].receipt_ns, recording.masks[s].receipt_ns) for s in answered)
        if last > first:
            throughput = len(answered) / ((last - first) / 1e9)
    return {"frames": frames, "latency": latency, "latencies_ms": latencies, "throughput_fps": throughput}


def detection_counts(results: List[dict], groundtruth: Dict) -> Dict:
    names = dict(zip(groundtruth["known_category_ids"], groundtruth["known_class_names"]))
    per_class: Dict[str, int] = {}
    for det in results:
        name = names.get(det["category_id"], UNKNOWN_NAME)
        per_class[name] = per_class.get(name, 0) + 1
    unknown = per_class.get(UNKNOWN_NAME, 0)
    return {"known": len(results) - unknown, "unknown": unknown, "per_class": per_class}


def score_recording(recording_path, input_bag=None, groundtruth_path=None, detections_topic=None,
                    instance_mask_topic=None, iou_types: Sequence[str] = ("bbox", "segm")) -> Dict:
    """Everything the report holds, as a JSON-ready dict (plus `_recording`/`_groundtruth` for plots)."""
    recording = load_recording(recording_path, detections_topic, instance_mask_topic)
    input_bag = input_bag or recording.input_bag
    source = groundtruth_path or input_bag
    if not source:
        raise BagError(f"recording {recording_path} does not name its input bag; pass --input-bag or --groundtruth")
    groundtruth = load_groundtruth(source)
    results = coco_results(recording, groundtruth)
    evaluator = OpenSetEvaluator(groundtruth["coco"], groundtruth["known_category_ids"], iou_types=iou_types)
    metrics = evaluator.evaluate(results, source=str(recording_path))
    report = {
        "recording": str(recording_path),
        "input_bag": str(input_bag) if input_bag else None,
        "replay": {k: v for k, v in recording.custom.items() if k != "writer"},
        "known_classes": groundtruth["known_class_names"],
        "metrics": metrics,
        "detections": detection_counts(results, groundtruth),
        "ground_truth": {"known": evaluator.num_known_gt, "unknown": evaluator.num_unknown_gt},
        "instances": instance_metrics(recording, groundtruth),
    }
    report.update(timing(recording, groundtruth))
    report["_recording"], report["_groundtruth"], report["_results"] = recording, groundtruth, results
    return report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="semseg-score-bag", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 2)[2])
    parser.add_argument("--recording", required=True, help="output bag written by semseg-replay")
    parser.add_argument("--report", required=True, help="report folder to write (created; files overwritten)")
    parser.add_argument("--input-bag", default=None,
                        help="the replayed bag, for images and ground truth (default: the one the recording names)")
    parser.add_argument("--groundtruth", default=None,
                        help="groundtruth.json to score against (default: the one inside the input bag)")
    parser.add_argument("--detections-topic", default=None,
                        help="Detection2DArray topic in the recording (default: the one the recording names)")
    parser.add_argument("--instance-mask-topic", default=None,
                        help="mono16 label-image topic in the recording (default: the one the recording names)")
    parser.add_argument("--iou-types", default="bbox,segm", help="comma-separated: bbox, segm or both (default)")
    parser.add_argument("--grid-frames", type=int, default=12, help="frames in the overlay grid PNG (default 12)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        report = score_recording(args.recording, args.input_bag, args.groundtruth, args.detections_topic,
                                 args.instance_mask_topic, tuple(t.strip() for t in args.iou_types.split(",")))
        folder = write_report(report, args.report, grid_frames=args.grid_frames)
    except (BagError, OSError, ValueError) as error:
        print(f"semseg-score-bag: error: {error}", file=sys.stderr)
        return 2
    print(format_summary(report))
    print(f"report: {Path(folder).resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
