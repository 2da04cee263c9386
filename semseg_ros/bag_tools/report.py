"""The report folder of a scored recording: report.json, summary.md and PNG plots, plus the overlay
frames (shared with the demo's video).

    report.json            metrics (bbox/segm), per-object figures, frame accounting, latency, throughput, counts
    summary.md             the same for people, with the plots inline
    latency_histogram.png  input publish -> output receipt
    per_class_ap.png       AP_k per known class (segm and bbox)
    overlay_grid.png       a grid of input frames with the recorded detections drawn over them
"""
import json
import math
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import cv2
import numpy as np
from matplotlib.figure import Figure  # the object API: no pyplot, no global backend switch

from semseg_ros.bag_tools.bag_io import connections_for, iter_messages, open_reader
from semseg_core.evaluation.instance_metrics import format_instance_table
from semseg_ros.bag_tools.recording import FrameOutput, answered_stamps, decode_frame, header_stamp_ns
from semseg_ros.bag_tools.typestore import IMAGE_TYPE, bag_typestore
from semseg_ros.image_codec import image_msg_to_numpy, to_rgb8
from semseg_ros.overlay import draw_overlay

SUMMARY_METRICS = (("AP_k", "AP_k"), ("AR_unk@100", "AR_unk@100"), ("AP_unk", "AP_unk"), ("AOSE", "AOSE"))


def _fmt(value, digits=2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def public(report: Dict) -> Dict:
    """The JSON-ready part of a report (drops the in-memory objects kept for plotting)."""
    return {k: v for k, v in report.items() if not k.startswith("_")}


def format_summary(report: Dict) -> str:
    """The one-screen terminal summary."""
    frames, lat, det, gt = report["frames"], report["latency"], report["detections"], report["ground_truth"]
    lines = [
        f"frames      {frames['answered']}/{frames['in_bag']} answered, {frames['unanswered']} unanswered"
        + (f", {frames['not_sent']} not sent" if frames.get("not_sent") else ""),
        f"detections  {det['known']} known, {det['unknown']} unknown   "
        f"(ground truth: {gt['known']} known, {gt['unknown']} unknown objects)",
    ]
    metrics = report["metrics"]
    header = f"{'metric':<12}" + "".join(f"{t:>10}" for t in metrics)
    lines += ["", header, "-" * len(header)]
    for key, label in SUMMARY_METRICS:
        digits = 0 if key == "AOSE" else 2
        lines.append(f"{label:<12}" + "".join(f"{_fmt(metrics[t].get(key), digits):>10}" for t in metrics))
    lines.append("")
    if report.get("instances"):
        lines += [format_instance_table({"published": report["instances"]}), ""]
    if lat["count"]:
        lines.append(f"latency     p50 {lat['p50_ms']:.1f} ms   p95 {lat['p95_ms']:.1f} ms   "
                     f"max {lat['max_ms']:.1f} ms   (input publish -> output receipt)")
    fps = report.get("throughput_fps")
    lines.append(f"throughput  {_fmt(fps, 2)} frames/s")
    return "\n".join(lines)


def input_images(input_bag, topic: str, stamps) -> Iterator[Tuple[int, np.ndarray]]:
    """(stamp, RGB image) of the wanted frames of the input bag, in bag order."""
    wanted = set(stamps)
    store = bag_typestore()
    with open_reader(input_bag) as reader:
        conns = connections_for(reader, [topic])[topic]
        for _, _, raw in iter_messages(reader, conns):
            msg = store.deserialize_cdr(raw, IMAGE_TYPE)
            stamp = header_stamp_ns(msg)
            if stamp in wanted:
                array, encoding = image_msg_to_numpy(msg)
                yield stamp, np.ascontiguousarray(to_rgb8(array, encoding))


def _for_drawing(frame: FrameOutput) -> FrameOutput:
    """draw_overlay colours label value k as instance k-1: renumber when the ids are not 1..N."""
    ids = list(frame.instance_ids)
    if ids == list(range(1, len(ids) + 1)):
        return frame
    lut = np.zeros(int(max([frame.label_image.max()] + ids)) + 1, np.uint16)
    for index, value in enumerate(ids):
        lut[value] = index + 1
    return FrameOutput(frame.stamp_ns, frame.boxes_cxcywh, frame.scores, frame.class_names,
                       list(range(1, len(ids) + 1)), lut[frame.label_image])


def overlay_frames(report: Dict, stamps: Optional[List[int]] = None) -> Iterator[Tuple[int, np.ndarray]]:
    """(stamp, overlay RGB) for answered frames (all, or the given stamps); unanswered frames of the
    bag are yielded as the bare image with a red 'no answer' banner."""
    recording, groundtruth = report["_recording"], report["_groundtruth"]
    answered = set(answered_stamps(recording))
    stamps = [f["stamp_ns"] for f in groundtruth["frames"]] if stamps is None else stamps
    for stamp, image in input_images(report["input_bag"], groundtruth["image_topic"], stamps):
        if stamp in answered:
            yield stamp, draw_overlay(image, _for_drawing(decode_frame(recording, stamp)))
        else:
            canvas = image.copy()
            cv2.rectangle(canvas, (0, 0), (canvas.shape[1] - 1, 18), (200, 0, 0), -1)
            cv2.putText(canvas, "no answer", (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1)
            yield stamp, canvas


def frame_grid(images: List[np.ndarray], columns: int = 4, tile: int = 256) -> np.ndarray:
    """Tiles of equal size (the first image's aspect) in rows of `columns`; RGB uint8."""
    h0, w0 = images[0].shape[:2]
    th, tw = tile, max(1, int(round(tile * w0 / h0)))
    rows = int(math.ceil(len(images) / columns))
    grid = np.full((rows * (th + 4) + 4, min(columns, len(images)) * (tw + 4) + 4, 3), 255, np.uint8)
    for index, image in enumerate(images):
        r, c = divmod(index, columns)
        y, x = 4 + r * (th + 4), 4 + c * (tw + 4)
        grid[y:y + th, x:x + tw] = cv2.resize(image, (tw, th), interpolation=cv2.INTER_AREA)
    return grid


def write_png(path: Path, rgb: np.ndarray) -> None:
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {path}")


def _plot_latency(report: Dict, path: Path) -> None:
    lat = report["latencies_ms"]
    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    if lat:
        ax.hist(lat, bins=min(30, max(5, len(lat) // 2)), color="#0082c8")
        for p, style in (("p50_ms", "-"), ("p95_ms", "--")):
            value = report["latency"][p]
            ax.axvline(value, color="k", linestyle=style, label=f"{p[:-3]} {value:.1f} ms")
        ax.legend()
    else:
        ax.text(0.5, 0.5, "no answered frames", ha="center", transform=ax.transAxes)
    ax.set_xlabel("latency: input publish -> output receipt (ms)")
    ax.set_ylabel("frames")
    ax.set_title(f"latency over {len(lat)} frames")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _plot_per_class(report: Dict, path: Path) -> None:
    metrics = report["metrics"]
    names = report["known_classes"]
    fig = Figure(figsize=(max(5, 1.0 * len(names) + 2), 3.5))
    ax = fig.subplots()
    width = 0.8 / max(1, len(metrics))
    for k, (iou_type, values) in enumerate(metrics.items()):
        per_class = values.get("per_class_AP_k", {})
        heights = [per_class.get(n) for n in names]
        heights = [0.0 if h is None or math.isnan(h) else h for h in heights]
        ax.bar(np.arange(len(names)) + (k - (len(metrics) - 1) / 2) * width, heights, width, label=iou_type)
    ax.set_xticks(np.arange(len(names)))
    ax.set_xticklabels(names, rotation=30, ha="right")
    ax.set_ylabel("AP_k (%)")
    ax.set_ylim(0, 100)
    ax.set_title("per-class AP of the known classes")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def summary_markdown(report: Dict) -> str:
    frames, lat = report["frames"], report["latency"]
    lines = ["# Bag evaluation report", "", f"- recording: `{report['recording']}`",
             f"- input bag: `{report['input_bag']}`"]
    replay = report.get("replay") or {}
    if replay:
        lines.append("- replay: " + ", ".join(f"{k}={v}" for k, v in sorted(replay.items())))
    lines += ["", "## Terminal summary", "", "```", format_summary(report), "```", "",
              "## Frames", "", "| | count |", "|---|---|"]
    lines += [f"| {k.replace('_', ' ')} | {_fmt(v)} |" for k, v in frames.items()]
    lines += ["", "## Open-set metrics", "", "| metric | " + " | ".join(report["metrics"]) + " |",
              "|---|" + "---|" * len(report["metrics"])]
    keys = [k for k, v in next(iter(report["metrics"].values())).items() if not isinstance(v, dict)]
    for key in keys:
        lines.append(f"| {key} | " + " | ".join(_fmt(m.get(key)) for m in report["metrics"].values()) + " |")
    if report.get("instances"):
        lines += ["", "## Per object (the published label image)", "",
                  "Each ground-truth object's best-overlapping published instance; Overlap / Boundary P/R/F after "
                  "one-to-one (Hungarian) matching, means over frames (as UOIS-Net / UCN / UOAIS report them).", "",
                  "```", format_instance_table({"published": report["instances"]}), "```"]
    lines += ["", "Frames without an answer count as frames with no detections.", "",
              "## Latency", ""]
    if lat["count"]:
        lines.append(" | ".join(f"{k} {_fmt(v, 1)}" for k, v in lat.items()))
    lines += ["", "![latency](latency_histogram.png)", "", "![per-class AP](per_class_ap.png)", "",
              "![overlay frames](overlay_grid.png)", ""]
    return "\n".join(lines)


def write_report(report: Dict, folder, grid_frames: int = 12) -> Path:
    """Write the report folder; returns its path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "report.json", "w") as f:
        json.dump(jsonable(public(report)), f, indent=2, allow_nan=False)
    _plot_latency(report, folder / "latency_histogram.png")
    _plot_per_class(report, folder / "per_class_ap.png")
    stamps = [f["stamp_ns"] for f in report["_groundtruth"]["frames"]]
    if grid_frames > 0 and stamps:
        picks = sorted({stamps[int(i)] for i in np.linspace(0, len(stamps) - 1, min(grid_frames, len(stamps)))})
        images = [image for _, image in overlay_frames(report, picks)]
        if images:
            write_png(folder / "overlay_grid.png", frame_grid(images, columns=4))
    (folder / "summary.md").write_text(summary_markdown(report))
    return folder


def jsonable(value):
    """Plain JSON types; NaN (a metric undefined, e.g. no unknown objects) becomes null."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
