"""The demo: synthetic open-set scenes -> camera bag -> live perception node -> recording -> report.

    semseg-demo                      (= make demo; ~15-40 s on a 2-core CPU)
    semseg-demo --short              (a few frames, for CI)

Generates a small synthetic test set (a seed the embedded model was not trained on, with objects of
unknown shape families), writes it as a rosbag2 camera bag, starts the perception node with the
default embedded model (or ``--weights``), replays the bag in every-frame mode while recording the
node's answers, scores the recording with the open-set evaluator and leaves in ``--out``:

    overlay.mp4 (or overlay_frames.png without a video codec)   what the node saw and answered
    report/report.json, report/summary.md, report/*.png           metrics, latency, plots
    input_bag/, recording/, scenes/, node.log                     everything needed to redo a step
"""
import argparse
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Optional, Sequence, Tuple

import cv2

from semseg_core.data.synthetic import generate_dataset
from semseg_ros.bag_tools.bag_io import BagError
from semseg_ros.bag_tools.make_bag import make_bag
from semseg_ros.bag_tools.replay import NodeSpec, ReplayError, node_param, replay
from semseg_ros.bag_tools.report import format_summary, frame_grid, overlay_frames, write_png, write_report
from semseg_ros.bag_tools.score import score_recording

DEMO_SEED = 2024          # the embedded model is trained on other seeds (train split)
DEFAULT_FRAMES = 60
SHORT_FRAMES = 6
FRAME_RATE_HZ = 10.0
NODE_NAME = "semseg_demo_perception"  # its own name: an unrelated perception_node is never recorded
OWN_OUTPUTS = ("scenes", "input_bag", "recording", "report", "overlay.mp4", "overlay_frames.png",
               "node.log", "recording.node.log")


def clear_previous_outputs(out: Path, names: Sequence[str]) -> None:
    """Remove only what an earlier demo run left in ``out`` (the user's other files stay)."""
    for name in names:
        target = out / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


def stage(number: int, total: int, text: str) -> None:
    print(f"[{number}/{total}] {text}", flush=True)


def write_video(report, path: Path, fps: float) -> Optional[Path]:
    """The overlay frames as an mp4 (OpenCV's mp4v encoder); None when no encoder is available."""
    writer = None
    try:
        for _, rgb in overlay_frames(report):
            if writer is None:
                height, width = rgb.shape[:2]
                writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
                if not writer.isOpened():
                    return None
            writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    finally:
        if writer is not None:
            writer.release()
    return path if path.is_file() and path.stat().st_size > 0 else None


def write_frame_grid(report, path: Path) -> Path:
    images = [rgb for _, rgb in overlay_frames(report)]
    write_png(path, frame_grid(images, columns=6, tile=192))
    return path


def check_weights(weights: Optional[str], embedded: Optional[str] = None) -> str:
    """A description of the model (``weights``, else the embedded file ``embedded``, else the embedded default
    model); a clear error when the file is missing."""
    if weights:
        if not os.path.isfile(weights):
            raise FileNotFoundError(f"--weights file not found: {weights}")
        return weights
    if embedded is None:
        from semseg_core.predictor import DEFAULT_WEIGHTS as embedded  # torch-free demo process: lazy import

    if not os.path.isfile(embedded):
        raise FileNotFoundError(f"the embedded model {embedded} is missing from this checkout; pass --weights PATH")
    return f"embedded tiny model ({os.path.relpath(embedded)})"


def run_demo(out: Path, num_frames: int, weights: Optional[str] = None, config: Optional[str] = None,
             storage: str = "mcap", image_size: int = 256, device: str = "cpu",
             node_params: Sequence[Tuple[str, str]] = ()) -> dict:
    """Every step of the demo; returns the scored report (with `paths` and `wall_s` added)."""
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")  # the demo stays on this machine

    started = time.monotonic()
    model = check_weights(weights)
    out.mkdir(parents=True, exist_ok=True)
    clear_previous_outputs(out, OWN_OUTPUTS)

    total = 5
    stage(1, total, f"generating {num_frames} synthetic test scenes (seed {DEMO_SEED}, known + unknown shapes)")
    coco_json = generate_dataset(str(out / "scenes"), num_frames, seed=DEMO_SEED, image_size=image_size,
                                 split="test")
    stage(2, total, f"writing the camera bag ({storage}, {FRAME_RATE_HZ:g} Hz)")
    make_bag(coco_json, out / "input_bag", rate=FRAME_RATE_HZ, storage=storage)
    stage(3, total, f"starting the perception node ({model}, {device}) and replaying every frame")
    params = {"process_every_frame": "true", "image_qos.reliability": "reliable", "queue_size": "1000",
              "device": device}
    if weights:
        params["weights"] = str(Path(weights).resolve())
    if config:
        params["model_config"] = str(Path(config).resolve())
    params.update(dict(node_params))
    summary = replay(out / "input_bag", out / "recording", storage=storage, every_frame=True, node_name=NODE_NAME,
                     start_node=NodeSpec(params, out / "node.log", startup_timeout_s=300))
    print(f"      {summary.answered}/{summary.frames} frames answered in {summary.wall_s:.1f} s "
          f"(node log: {out / 'node.log'})", flush=True)
    stage(4, total, "scoring the recording (open-set COCO metrics, latency) and writing the report")
    report = score_recording(out / "recording")
    write_report(report, out / "report")
    stage(5, total, "rendering the overlay video")
    video = write_video(report, out / "overlay.mp4", FRAME_RATE_HZ)
    visual = video or write_frame_grid(report, out / "overlay_frames.png")
    report["paths"] = {"overlay": str(visual), "report": str(out / "report"), "recording": str(out / "recording"),
                       "input_bag": str(out / "input_bag")}
    report["model"] = model
    report["wall_s"] = time.monotonic() - started
    return report


def format_demo_summary(report: dict) -> str:
    paths = report["paths"]
    rule = "=" * 72
    return "\n".join([
        rule, f"semseg_ros demo   model: {report['model']}", rule, format_summary(report), rule,
        f"overlay   {paths['overlay']}",
        f"report    {paths['report']}/summary.md (+ report.json, latency_histogram.png, per_class_ap.png, "
        f"overlay_grid.png)",
        f"bags      {paths['input_bag']} -> {paths['recording']}",
        f"done in {report['wall_s']:.0f} s", rule])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="semseg-demo", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--num-frames", type=int, default=None,
                        help=f"synthetic frames to generate and replay (default {DEFAULT_FRAMES}; "
                             f"{SHORT_FRAMES} with --short)")
    parser.add_argument("--out", default="demo_output", help="output folder (default demo_output/)")
    parser.add_argument("--weights", default=None, help="model checkpoint (default: the embedded tiny model)")
    parser.add_argument("--config", default=None,
                        help="model config YAML (default: the config stored in the checkpoint)")
    parser.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap",
                        help="rosbag2 storage of the bags (default mcap)")
    parser.add_argument("--device", default="cpu", help="inference device: cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--image-size", type=int, default=256, help="side of the square synthetic images (default 256)")
    parser.add_argument("--short", action="store_true", help=f"a quick run of {SHORT_FRAMES} frames (for CI)")
    parser.add_argument("--param", type=node_param, action="append", default=[], metavar="NAME:=VALUE",
                        help="any other node parameter, e.g. output:=raw for the authors' raw output (repeatable)")
    parser.add_argument("--scenes", choices=("shapes", "tabletop"), default="shapes",
                        help="shapes (default) or tabletop: RGB-D scenes rendered from meshes, the node with "
                             "use_depth and a 3D report (the embedded tabletop model unless --weights)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.scenes == "tabletop":
        from semseg_ros.demo_tabletop import run_from_args  # cycle: demo_tabletop imports this module's steps
        return run_from_args(args, "semseg-demo --scenes tabletop")
    num_frames = args.num_frames or (SHORT_FRAMES if args.short else DEFAULT_FRAMES)
    if num_frames < 1:
        print("semseg-demo: error: --num-frames must be >= 1", file=sys.stderr)
        return 2
    try:
        report = run_demo(Path(args.out), num_frames, args.weights, args.config, args.storage, args.image_size,
                          args.device, args.param)
    except (BagError, ReplayError, OSError, ValueError) as error:
        print(f"semseg-demo: error: {error}", file=sys.stderr)
        return 1
    print(format_demo_summary(report))
    return 0 if report["frames"]["unanswered"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
