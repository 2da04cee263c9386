"""The RGB-D demo: tabletop scenes from meshes -> RGB-D bag -> node with use_depth -> 2D + 3D report.

    semseg-demo --scenes tabletop                       (the embedded tabletop model)
    semseg-demo --scenes tabletop --weights output/tabletop_tiny/model_final.pth
    python -m semseg_ros.demo_tabletop --short          (a few frames)

Renders test scenes of the built-in household meshes (known) and procedural blobs (unknown) with pybullet, writes
them as a rosbag2 bag with colour, aligned 16UC1 depth and the real camera_info, starts the perception node with
``use_depth:=true``, replays every frame while recording ``~/detections``, ``~/instance_mask`` and
``~/detections_3d``, and scores the 2D outputs with the open-set evaluator and the 3D ones against the true object
poses (`semseg_ros.bag_tools.score_3d`). The model must know the tabletop classes (config/models/Tabletop); the
default is the embedded one, `semseg_core/assets/semseg_tiny_tabletop.pt`. Leaves
in ``--out``: report/ (report.json, summary.md, detections_3d.json, plots), overlay video or frame grid,
scenes/, input_bag/, recording/, node.log.
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Optional, Sequence, Tuple

from semseg_core.data.tabletop import generate_tabletop_dataset
from semseg_core.data.tabletop_assets import builtin_assets
from semseg_core.data.tabletop_scene import SceneOptions
from semseg_ros.bag_tools.bag_io import BagError
from semseg_ros.bag_tools.node_process import NodeSpec
from semseg_ros.bag_tools.replay import ReplayError, node_param, replay
from semseg_ros.bag_tools.report import format_summary, write_report
from semseg_ros.bag_tools.rgbd_bag import make_rgbd_bag
from semseg_ros.bag_tools.score import score_recording
from semseg_ros.bag_tools.score_3d import format_3d_summary, score_detections_3d
from semseg_ros.demo import check_weights, clear_previous_outputs, stage, write_frame_grid, write_video

DEMO_SEED = 2024
DEFAULT_FRAMES = 20
# The instance map's known label threshold for the tabletop model, from its trade-off on the held-out test scenes
# (README "Your own objects", docs/tabletop_tradeoff.png: chosen on 60 scenes of seed 3); --param overrides.
KNOWN_MIN_PROBABILITY = 0.8
SHORT_FRAMES = 4
FRAME_RATE_HZ = 10.0
NODE_NAME = "semseg_tabletop_demo"
OWN_OUTPUTS = ("scenes", "input_bag", "recording", "report", "overlay.mp4", "overlay_frames.png", "node.log")


def run_tabletop_demo(out: Path, num_frames: int, weights: Optional[str], config: Optional[str] = None,
                      storage: str = "mcap", device: str = "cpu", depth_encoding: str = "16UC1",
                      node_params: Sequence[Tuple[str, str]] = ()) -> dict:
    """Every step of the RGB-D demo; returns the scored report with its ``detections_3d`` section."""
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")  # the demo stays on this machine

    started = time.monotonic()
    from semseg_core.predictor import TABLETOP_WEIGHTS  # lazy: the predictor module imports torch

    model = check_weights(weights, TABLETOP_WEIGHTS)
    weights = weights or TABLETOP_WEIGHTS
    out.mkdir(parents=True, exist_ok=True)
    clear_previous_outputs(out, OWN_OUTPUTS)

    total = 5
    stage(1, total, f"rendering {num_frames} tabletop RGB-D scenes (seed {DEMO_SEED}, known + unknown meshes)")
    coco_json = generate_tabletop_dataset(str(out / "scenes"), builtin_assets(), num_frames, DEMO_SEED,
                                          split="test", options=SceneOptions())
    stage(2, total, f"writing the RGB-D bag (colour + {depth_encoding} depth + camera_info, {storage})")
    bag = make_rgbd_bag(coco_json, out / "input_bag", rate=FRAME_RATE_HZ, storage=storage,
                        depth_encoding=depth_encoding)
    groundtruth = json.loads(bag.groundtruth_path.read_text())
    stage(3, total, f"starting the node (use_depth, {model}, {device}) and replaying every frame")
    params = {"process_every_frame": "true", "image_qos.reliability": "reliable", "queue_size": "1000",
              "device": device, "use_depth": "true", "weights": str(Path(weights).resolve()),
              "known_min_probability": str(KNOWN_MIN_PROBABILITY)}
    if config:
        params["model_config"] = str(Path(config).resolve())
    params.update(dict(node_params))
    remaps = {"depth": groundtruth["depth_topic"], "camera_info": groundtruth["camera_info_topic"]}
    summary = replay(out / "input_bag", out / "recording", storage=storage, every_frame=True, node_name=NODE_NAME,
                     start_node=NodeSpec(params, out / "node.log", startup_timeout_s=300, remaps=remaps),
                     record_3d=True)
    print(f"      {summary.answered}/{summary.frames} frames answered in {summary.wall_s:.1f} s", flush=True)
    stage(4, total, "scoring 2D (open-set COCO metrics) and 3D (centroid / extent vs true poses)")
    report = score_recording(out / "recording")
    report["detections_3d"] = score_detections_3d(out / "recording")
    folder = write_report(report, out / "report")
    (Path(folder) / "detections_3d.json").write_text(json.dumps(report["detections_3d"], indent=2))
    with open(Path(folder) / "summary.md", "a") as f:
        f.write("\n## 3D\n\n```\n" + format_3d_summary(report["detections_3d"]) + "\n```\n")
    stage(5, total, "rendering the overlay video")
    video = write_video(report, out / "overlay.mp4", FRAME_RATE_HZ)
    visual = video or write_frame_grid(report, out / "overlay_frames.png")
    report["paths"] = {"overlay": str(visual), "report": str(folder), "recording": str(out / "recording"),
                       "input_bag": str(out / "input_bag")}
    report["model"] = model
    report["wall_s"] = time.monotonic() - started
    return report


def build_parser(prog: str = "python -m semseg_ros.demo_tabletop") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--weights", default=None, help="checkpoint of a model trained on the tabletop classes "
                        "(default: the embedded semseg_core/assets/semseg_tiny_tabletop.pt)")
    parser.add_argument("--config", default=None, help="model config YAML (default: the one in the checkpoint)")
    parser.add_argument("--num-frames", type=int, default=None,
                        help=f"scenes to render and replay (default {DEFAULT_FRAMES}; {SHORT_FRAMES} with --short)")
    parser.add_argument("--short", action="store_true", help=f"a quick run of {SHORT_FRAMES} frames")
    parser.add_argument("--out", default="demo_output_tabletop", help="output folder (default demo_output_tabletop/)")
    parser.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    parser.add_argument("--device", default="cpu", help="inference device: cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--depth-encoding", choices=("16UC1", "32FC1"), default="16UC1",
                        help="depth message encoding in the bag (default 16UC1 millimetres)")
    parser.add_argument("--param", type=node_param, action="append", default=[], metavar="NAME:=VALUE",
                        help="any other node parameter (repeatable)")
    return parser


def run_from_args(args, prog: str) -> int:
    """Run with parsed options (``weights, config, num_frames, short, out, storage, device, param`` and optionally
    ``depth_encoding``); prints the summary; the exit status. `semseg-demo --scenes tabletop` calls this too."""
    num_frames = args.num_frames or (SHORT_FRAMES if args.short else DEFAULT_FRAMES)
    if num_frames < 1:
        print(f"{prog}: error: --num-frames must be >= 1", file=sys.stderr)
        return 2

    try:
        report = run_tabletop_demo(Path(args.out), num_frames, args.weights, args.config, args.storage,
                                   args.device, getattr(args, "depth_encoding", "16UC1"), args.param)
    except (BagError, ReplayError, OSError, ValueError) as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 1
    rule = "=" * 72
    print("\n".join([rule, f"semseg_ros tabletop RGB-D demo   model: {report['model']}", rule,
                     format_summary(report), "", format_3d_summary(report["detections_3d"]), rule,
                     f"overlay   {report['paths']['overlay']}", f"report    {report['paths']['report']}/summary.md",
                     f"done in {report['wall_s']:.0f} s", rule]))
    return 0 if report["frames"]["unanswered"] == 0 else 1


def main(argv: Optional[Sequence[str]] = None, prog: str = "python -m semseg_ros.demo_tabletop") -> int:
    return run_from_args(build_parser(prog).parse_args(argv), prog)

if __name__ == "__main__":
    sys.exit(main())
