"""Score a recording's Detection3DArray against the ground-truth object poses of a tabletop RGB-D bag.

Each node instance (value k of the frame's mono16 label image; Detection3D.id = "k") is matched to a ground-truth
object by visible-mask IoU (greedy, highest first, IoU >= 0.5). For every matched object that has a 3D detection:

    centroid error (mm)  |detected centre - true centre|, the true centre being the centre of the object's
                         posed mesh bounded along the camera axes (annotation ``camera_box``)
    extent error (mm)    mean over x, y, z of |detected size - true size| (same axis-aligned box)

The same numbers for the *oracle*, the node's own depth rule (`semseg_ros.depth.instance_boxes_3d`) applied to
the ground-truth masks and the bag's depth, tell how much of the error the rule itself makes (it sees only the
visible surface) and how much the segmentation adds.
"""
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np
from pycocotools import mask as mask_utils

from semseg_ros.bag_tools.bag_io import BagError, custom_data, iter_messages, open_reader
from semseg_ros.bag_tools.make_bag import load_groundtruth
from semseg_ros.bag_tools.recording import header_stamp_ns, load_recording
from semseg_ros.bag_tools.score import decode_frame
from semseg_ros.bag_tools.typestore import DETECTIONS_3D_TYPE, IMAGE_TYPE, bag_typestore
from semseg_ros.depth import Intrinsics, instance_boxes_3d
from semseg_ros.image_codec import depth_to_meters, image_msg_to_numpy

MATCH_IOU = 0.5
ERROR_PERCENTILES = (50, 90)


@dataclass(frozen=True)
class BoxError:
    """Errors of one ground-truth object's 3D box (millimetres)."""
    image_id: int
    annotation_id: int
    known: bool
    centroid_mm: float
    extent_mm: float


def box_error(center, size, true_center, true_size) -> Dict[str, float]:
    """Centroid distance and mean per-axis extent difference, in millimetres."""
    center, size, true_center, true_size = (np.asarray(v, np.float64) for v in (center, size, true_center, true_size))
    return {"centroid_mm": float(np.linalg.norm(center - true_center) * 1000.0),
            "extent_mm": float(np.abs(size - true_size).mean() * 1000.0)}


def match_by_mask(label_image: np.ndarray, gt_masks: Sequence[np.ndarray],
                  min_iou: float = MATCH_IOU) -> Dict[int, int]:
    """{instance id: ground-truth index}, greedy by IoU (each side used once)."""
    ids = [int(i) for i in np.unique(label_image) if i != 0]
    pairs = []
    for instance_id in ids:
        predicted = label_image == instance_id
        for index, gt in enumerate(gt_masks):
            union = np.logical_or(predicted, gt).sum()
            iou = np.logical_and(predicted, gt).sum() / union if union else 0.0
            if iou >= min_iou:
                pairs.append((iou, instance_id, index))
    matched, used = {}, set()
    for _, instance_id, index in sorted(pairs, reverse=True):
        if instance_id not in matched and index not in used:
            matched[instance_id] = index
            used.add(index)
    return matched


def summarize(errors: List[BoxError]) -> Dict:
    """Count, mean and percentiles of both errors, overall and for known / unknown objects."""
    def stats(items):
        out = {"count": len(items)}
        for name in ("centroid_mm", "extent_mm"):
            values = np.array([getattr(e, name) for e in items], np.float64)
            if values.size:
                out[name] = {"mean": float(values.mean()),
                             **{f"p{p}": float(np.percentile(values, p)) for p in ERROR_PERCENTILES}}
        return out
    return {"all": stats(errors), "known": stats([e for e in errors if e.known]),
            "unknown": stats([e for e in errors if not e.known])}


def _messages_by_stamp(bag, topic: str, msgtype: str) -> Dict[int, object]:
    store = bag_typestore()
    out = {}
    with open_reader(bag) as reader:
        connections = [c for c in reader.connections if c.topic == topic]
        if not connections:
            present = ", ".join(sorted({c.topic for c in reader.connections})) or "none"
            raise BagError(f"bag {bag} has no topic {topic!r} (topics in it: {present})")
        for _, _, raw in iter_messages(reader, connections):
            msg = store.deserialize_cdr(raw, msgtype)
            out.setdefault(header_stamp_ns(msg), msg)
    return out


def _intrinsics(image: Dict) -> Intrinsics:
    k = image["camera_info"]["k"]
    return Intrinsics(fx=k[0], fy=k[4], cx=k[2], cy=k[5], width=image["width"], height=image["height"])


def score_detections_3d(recording_path, groundtruth_path=None, detections_3d_topic: Optional[str] = None) -> Dict:
    """The 3D section of the report (see the module docstring)."""
    recording = load_recording(recording_path)
    custom = custom_data(recording_path)
    topic = detections_3d_topic or custom.get("detections_3d_topic")
    if not topic:
        raise BagError(f"recording {recording_path} has no detections_3d topic (replay with record_3d, the node "
                       "with use_depth:=true)")
    source = groundtruth_path or recording.input_bag
    groundtruth = load_groundtruth(source)
    if "depth_topic" not in groundtruth:
        raise BagError(f"{source}: the ground truth names no depth topic (not an RGB-D bag from rgbd_bag)")
    detections_3d = _messages_by_stamp(recording_path, topic, DETECTIONS_3D_TYPE)
    depth_msgs = _messages_by_stamp(recording.input_bag, groundtruth["depth_topic"], IMAGE_TYPE)
    images = {im["id"]: im for im in groundtruth["coco"]["images"]}
    annotations: Dict[int, List[Dict]] = {}
    for ann in groundtruth["coco"]["annotations"]:
        annotations.setdefault(ann["image_id"], []).append(ann)

    node_errors, oracle_errors = [], []
    counts = {"ground_truth": 0, "matched_2d": 0, "with_3d": 0, "frames_with_3d": 0,
              "detections_3d": 0}
    answered = set(recording.detections) & set(recording.masks)
    for frame in groundtruth["frames"]:
        stamp, image_id = frame["stamp_ns"], frame["image_id"]
        anns = annotations.get(image_id, [])
        counts["ground_truth"] += len(anns)
        gt_masks = [mask_utils.decode(a["segmentation"]).astype(bool) for a in anns]
        intrinsics = _intrinsics(images[image_id])

        if stamp in depth_msgs and anns:  # the oracle: the node's depth rule on the true masks
            depth, encoding = image_msg_to_numpy(depth_msgs[stamp])
            gt_label = np.zeros(gt_masks[0].shape, np.uint16)
            for index, mask in enumerate(gt_masks):
                gt_label[mask] = index + 1
            for box in instance_boxes_3d(gt_label, depth_to_meters(depth, encoding), intrinsics):
                ann = anns[box.instance_id - 1]
                err = box_error(box.center, box.size, ann["camera_box"]["center_m"], ann["camera_box"]["size_m"])
                oracle_errors.append(BoxError(image_id, ann["id"], bool(ann["known"]), **err))

        if stamp not in answered:
            continue
        label = decode_frame(recording, stamp).label_image
        matched = match_by_mask(np.asarray(label), gt_masks)
        counts["matched_2d"] += len(matched)
        message = detections_3d.get(stamp)
        if message is None:
            continue
        counts["frames_with_3d"] += 1
        counts["detections_3d"] += len(message.detections)
        for det in message.detections:
            index = matched.get(int(det.id))
            if index is None:
                continue
            ann = anns[index]
            center = det.bbox.center.position
            size = det.bbox.size
            err = box_error([center.x, center.y, center.z], [size.x, size.y, size.z],
                            ann["camera_box"]["center_m"], ann["camera_box"]["size_m"])
            node_errors.append(BoxError(image_id, ann["id"], bool(ann["known"]), **err))
    counts["with_3d"] = len(node_errors)
    return {"counts": counts, "match_iou": MATCH_IOU, "node": summarize(node_errors),
            "oracle_masks": summarize(oracle_errors),
            "reference": "centre and size of the posed mesh bounded along the camera axes (annotation camera_box)"}


def format_3d_summary(section: Dict) -> str:
    """A few plain lines for the console and summary.md."""
    def line(name, part):
        if not part.get("count"):
            return f"  {name:<22} no objects"
        c, e = part["centroid_mm"], part["extent_mm"]
        return (f"  {name:<22} {part['count']:>4} objects  centroid err median {c['p50']:6.1f} mm "
                f"(p90 {c['p90']:6.1f})  extent err median {e['p50']:6.1f} mm (p90 {e['p90']:6.1f})")
    counts = section["counts"]
    lines = [f"3D (Detection3DArray vs true object boxes): {counts['with_3d']}/{counts['ground_truth']} objects "
             f"matched (mask IoU >= {section['match_iou']}) with a 3D detection"]
    for group in ("all", "known", "unknown"):
        lines.append(line(f"node, {group}", section["node"][group]))
    lines.append(line("oracle masks, all", section["oracle_masks"]["all"]))
    return "\n".join(lines)
