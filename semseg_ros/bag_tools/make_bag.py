"""Make a rosbag2 camera bag from a COCO-format image set, with its ground truth beside it.

    semseg-make-bag --coco datasets/synthetic/test/annotations.json --out demo.bag --rate 10 --storage mcap

The bag holds ``sensor_msgs/Image`` (rgb8) on ``--topic`` and, unless ``--no-camera-info``, a matching
``sensor_msgs/CameraInfo``, one frame per COCO image at ``--rate`` Hz. Header stamps equal the log
times, so a frame is identified by its stamp. ``groundtruth.json`` in the bag folder maps each stamp to
its COCO image id and carries the COCO ground truth of exactly those images plus the known classes;
rosbag2 ignores files its metadata does not list, so the folder stays a valid bag for ``ros2 bag play``.
"""
import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import cv2
import numpy as np
from tqdm import tqdm

from semseg_core.atomic_io import atomic_open
from semseg_ros.bag_tools.bag_io import RELIABLE_QOS, STORAGES, BagError, open_writer
from semseg_ros.bag_tools.typestore import CAMERA_INFO_TYPE, IMAGE_TYPE, bag_typestore

GROUNDTRUTH_FILE = "groundtruth.json"
GROUNDTRUTH_FORMAT = "semseg_ros.groundtruth/1"
DEFAULT_IMAGE_TOPIC = "/camera/color/image_raw"  # the launch file's image_topic default
DEFAULT_CAMERA_INFO_TOPIC = "/camera/color/camera_info"  # the launch file's camera_info_topic default
# A fixed, recognisable start time (2024-01-01T00:00:00Z): the same input gives a byte-identical bag.
DEFAULT_START_NS = 1_704_067_200 * 1_000_000_000


@dataclass
class BagSummary:
    path: Path
    frames: int
    image_topic: str
    groundtruth_path: Path
    duration_s: float


def _time(store, stamp_ns: int):
    Time = store.types["builtin_interfaces/msg/Time"]
    return Time(sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000)


def image_message(store, rgb: np.ndarray, stamp_ns: int, frame_id: str):
    Image = store.types[IMAGE_TYPE]
    Header = store.types["std_msgs/msg/Header"]
    height, width = rgb.shape[:2]
    return Image(header=Header(stamp=_time(store, stamp_ns), frame_id=frame_id), height=height, width=width,
                 encoding="rgb8", is_bigendian=0, step=width * 3,
                 data=np.ascontiguousarray(rgb, dtype=np.uint8).reshape(-1))


def camera_info_message(store, width: int, height: int, stamp_ns: int, frame_id: str):
    """A plausible pinhole model (focal length = image width, ~53 degree field of view, no distortion):
    synthetic scenes have no real camera, but depth-aware consumers need intrinsics to exist."""
    CameraInfo = store.types[CAMERA_INFO_TYPE]
    Header = store.types["std_msgs/msg/Header"]
    RegionOfInterest = store.types["sensor_msgs/msg/RegionOfInterest"]
    f, cx, cy = float(width), (width - 1) / 2.0, (height - 1) / 2.0
    k = np.array([f, 0, cx, 0, f, cy, 0, 0, 1], np.float64)
    p = np.array([f, 0, cx, 0, 0, f, cy, 0, 0, 0, 1, 0], np.float64)
    return CameraInfo(header=Header(stamp=_time(store, stamp_ns), frame_id=frame_id), height=height,
                      width=width, distortion_model="plumb_bob", d=np.zeros(5, np.float64), k=k,
                      r=np.eye(3).reshape(-1), p=p, binning_x=0, binning_y=0,
                      roi=RegionOfInterest(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))


def known_categories(coco: Dict, known_class_names: Optional[Sequence[str]]) -> List[Dict]:
    """The known categories: the names given, else the synthetic set's ``info.known_families``, else all."""
    names = list(known_class_names) if known_class_names else coco.get("info", {}).get("known_families")
    by_name = {c["name"]: c for c in coco["categories"]}
    if not names:
        return sorted(coco["categories"], key=lambda c: c["id"])
    missing = [n for n in names if n not in by_name]
    if missing:
        raise BagError(f"known classes {missing} are not categories of the COCO file "
                       f"(categories: {', '.join(sorted(by_name))})")
    return sorted((by_name[n] for n in names), key=lambda c: c["id"])


def make_bag(coco_json, out, image_root=None, rate: float = 10.0, storage: str = "sqlite3",
             topic: str = DEFAULT_IMAGE_TOPIC, camera_info_topic: Optional[str] = DEFAULT_CAMERA_INFO_TOPIC,
             frame_id: str = "camera_color_optical_frame", start_ns: int = DEFAULT_START_NS,
             max_frames: Optional[int] = None, known_class_names: Optional[Sequence[str]] = None,
             progress: bool = True) -> BagSummary:
    """Write the bag folder ``out`` and its ``groundtruth.json``; return a summary."""
    coco_json = Path(coco_json)
    if not coco_json.is_file():
        raise BagError(f"COCO file {coco_json} does not exist")
    if rate <= 0:
        raise BagError(f"rate must be > 0 Hz, got {rate}")
    coco, images = _read_coco_images(coco_json, max_frames)
    known = known_categories(coco, known_class_names)
    image_root = Path(image_root) if image_root else coco_json.parent / "images"
    period_ns = int(round(1e9 / rate))
    stamps = [int(start_ns) + index * period_ns for index in range(len(images))]
    _write_frames(out, storage, topic, camera_info_topic, frame_id, image_root, images, stamps, coco_json, progress)
    frames = [{"stamp_ns": stamp, "image_id": entry["id"], "file_name": entry["file_name"]}
              for stamp, entry in zip(stamps, images)]
    gt_path = write_groundtruth(out, coco=coco, images=images, known=known, frames=frames, coco_json=coco_json,
                                topics={"image_topic": topic, "camera_info_topic": camera_info_topic},
                                frame_id=frame_id, rate=rate)
    return BagSummary(Path(out), len(frames), topic, gt_path, (len(frames) - 1) * period_ns / 1e9)


def _read_coco_images(coco_json: Path, max_frames: Optional[int]):
    """(the COCO dict, its first ``max_frames`` image entries by id); an error when there are none."""
    with open(coco_json) as f:
        coco = json.load(f)
    images = sorted(coco["images"], key=lambda im: im["id"])[:max_frames]
    if not images:
        raise BagError(f"COCO file {coco_json} lists no images")
    return coco, images


def _write_frames(out, storage: str, topic: str, camera_info_topic: Optional[str], frame_id: str, image_root: Path,
                  images: List[Dict], stamps: List[int], coco_json: Path, progress: bool) -> None:
    """One image message (and camera info, when a topic is given) per COCO image at its stamp."""
    store = bag_typestore()
    writer = open_writer(out, storage)
    try:
        image_conn = writer.add_connection(topic, IMAGE_TYPE, typestore=store,
                                           offered_qos_profiles=[RELIABLE_QOS])
        info_conn = (writer.add_connection(camera_info_topic, CAMERA_INFO_TYPE, typestore=store,
                                           offered_qos_profiles=[RELIABLE_QOS])
                     if camera_info_topic else None)
        for entry, stamp in tqdm(zip(images, stamps), total=len(images), desc="bag frames", unit="frame",
                                 disable=not progress):
            path = image_root / entry["file_name"]
            bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if bgr is None:
                raise BagError(f"cannot read image {path} (image id {entry['id']} of {coco_json})")
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            writer.write(image_conn, stamp, store.serialize_cdr(image_message(store, rgb, stamp, frame_id),
                                                                IMAGE_TYPE))
            if info_conn is not None:
                info = camera_info_message(store, rgb.shape[1], rgb.shape[0], stamp, frame_id)
                writer.write(info_conn, stamp, store.serialize_cdr(info, CAMERA_INFO_TYPE))
    finally:
        writer.close()


def write_groundtruth(out, *, coco: Dict, images: List[Dict], known: List[Dict], frames: List[Dict], coco_json,
                      topics: Dict[str, str], frame_id: str, rate: float) -> Path:
    """Write the bag's ground-truth file (what `semseg-score-bag` reads) atomically and return its path.

    Args:
        coco, images: the source COCO dict and the image entries the bag holds (their annotations are kept).
        known: the known categories; frames: one {"stamp_ns", "image_id", "file_name"} per bag frame.
        topics: the bag's topics by role ("image_topic", "camera_info_topic", and e.g. "depth_topic").
    """
    groundtruth = {"format": GROUNDTRUTH_FORMAT, **topics, "frame_id": frame_id, "rate_hz": rate,
                   "source": str(coco_json), "known_category_ids": [c["id"] for c in known],
                   "known_class_names": [c["name"] for c in known], "frames": frames,
                   "coco": _coco_subset(coco, images)}
    gt_path = Path(out) / GROUNDTRUTH_FILE
    with atomic_open(str(gt_path), "w") as f:
        json.dump(groundtruth, f)
    return gt_path


def _coco_subset(coco: Dict, images: List[Dict]) -> Dict:
    """The COCO ground truth of exactly ``images``: their annotations and every category."""
    ids = {entry["id"] for entry in images}
    return {
        "info": coco.get("info", {}),
        "images": images,
        "annotations": [a for a in coco.get("annotations", []) if a["image_id"] in ids],
        "categories": coco["categories"],
    }


def load_groundtruth(bag_or_file) -> Dict:
    """The ground truth written by `make_bag`: from a bag folder or a groundtruth.json path."""
    path = Path(bag_or_file)
    path = path / GROUNDTRUTH_FILE if path.is_dir() else path
    if not path.is_file():
        raise BagError(f"ground truth {path} does not exist (bags made by semseg-make-bag carry one)")
    try:
        with open(path) as f:
            doc = json.load(f)
    except (OSError, ValueError) as error:
        raise BagError(f"cannot read ground truth {path}: {error}") from error
    if doc.get("format") != GROUNDTRUTH_FORMAT:
        raise BagError(f"{path} is not a semseg_ros ground-truth file (format {doc.get('format')!r})")
    return doc


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="semseg-make-bag", description=__doc__.split("\n\n")[0],
        epilog="The bag is written with rosbag2 metadata version 8 (readable by Humble and newer).")
    parser.add_argument("--coco", required=True, help="COCO annotation json of the image set")
    parser.add_argument("--images", default=None,
                        help="folder the json's file_name entries are relative to (default: <json folder>/images)")
    parser.add_argument("--out", required=True, help="bag folder to create (must not exist)")
    parser.add_argument("--rate", type=float, default=10.0, help="frame rate in Hz (default 10)")
    parser.add_argument("--storage", choices=sorted(STORAGES), default="sqlite3",
                        help="rosbag2 storage plugin (default sqlite3)")
    parser.add_argument("--topic", default=DEFAULT_IMAGE_TOPIC, help=f"image topic (default {DEFAULT_IMAGE_TOPIC})")
    parser.add_argument("--camera-info-topic", default=DEFAULT_CAMERA_INFO_TOPIC,
                        help=f"camera info topic (default {DEFAULT_CAMERA_INFO_TOPIC})")
    parser.add_argument("--no-camera-info", action="store_true", help="do not write camera info messages")
    parser.add_argument("--frame-id", default="camera_color_optical_frame", help="header frame_id of every message")
    parser.add_argument("--start-ns", type=int, default=DEFAULT_START_NS,
                        help="stamp of the first frame in nanoseconds since the epoch (default 2024-01-01)")
    parser.add_argument("--max-frames", type=int, default=None, help="use only the first N images (by id)")
    parser.add_argument("--known-classes", default=None,
                        help="comma-separated known category names for scoring (default: the json's "
                             "info.known_families, else every category)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    known = [s.strip() for s in args.known_classes.split(",") if s.strip()] if args.known_classes else None
    try:
        summary = make_bag(args.coco, args.out, args.images, args.rate, args.storage, args.topic,
                           None if args.no_camera_info else args.camera_info_topic, args.frame_id,
                           args.start_ns, args.max_frames, known, progress=not args.quiet)
    except (BagError, OSError, ValueError, KeyError) as error:
        print(f"semseg-make-bag: error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {summary.frames} frames ({summary.duration_s:.2f} s) on {summary.image_topic} to "
          f"{summary.path}; ground truth {summary.groundtruth_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
