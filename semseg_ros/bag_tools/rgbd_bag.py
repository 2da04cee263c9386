"""An RGB-D camera bag from a tabletop dataset (semseg_core.data.tabletop): colour, aligned depth, camera info.

    python -m semseg_ros.bag_tools.rgbd_bag --coco datasets/tabletop/test/annotations.json --out rgbd.bag

Per frame: ``sensor_msgs/Image`` rgb8 on the image topic, ``sensor_msgs/Image`` 16UC1 (millimetres) or 32FC1
(metres) depth aligned with it, and the dataset's real ``sensor_msgs/CameraInfo``, all with the same header
stamp and frame id. Depth and camera info are logged 1 us before their image, so a replay delivers them first
and the node finds them when the image's result is ready. ``groundtruth.json`` has the format of
`semseg-make-bag`'s (the COCO annotations keep their 3D poses) plus the depth and camera-info topics.
"""
import argparse
import json
import os
import sys
from pathlib import Path
from typing import Dict, Optional, Sequence

import cv2
import numpy as np
from tqdm import tqdm

from semseg_core.data.tabletop import read_depth_m
from semseg_core.data.tabletop_camera import depth_to_millimetres
from semseg_ros.bag_tools.bag_io import RELIABLE_QOS, STORAGES, BagError, open_writer
from semseg_ros.bag_tools.make_bag import (
    DEFAULT_CAMERA_INFO_TOPIC,
    DEFAULT_IMAGE_TOPIC,
    DEFAULT_START_NS,
    BagSummary,
    image_message,
    known_categories,
    write_groundtruth,
)
from semseg_ros.bag_tools.typestore import CAMERA_INFO_TYPE, IMAGE_TYPE, bag_typestore

DEFAULT_DEPTH_TOPIC = "/camera/depth/image_rect_raw"
DEPTH_ENCODINGS = ("16UC1", "32FC1")
SIDE_CHANNEL_LEAD_NS = 1000  # depth + camera info are logged this much before their image


def _header(store, stamp_ns: int, frame_id: str):
    Time = store.types["builtin_interfaces/msg/Time"]
    Header = store.types["std_msgs/msg/Header"]
    return Header(stamp=Time(sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000), frame_id=frame_id)


def depth_message(store, depth_m: np.ndarray, encoding: str, stamp_ns: int, frame_id: str):
    """Depth as 16UC1 millimetres (0 = invalid) or 32FC1 metres, native little-endian rows without padding."""
    if encoding == "16UC1":
        data = depth_to_millimetres(depth_m)
    elif encoding == "32FC1":
        data = np.asarray(depth_m, dtype=np.float32)
    else:
        raise BagError(f"depth encoding must be one of {', '.join(DEPTH_ENCODINGS)}, got {encoding!r}")
    data = np.ascontiguousarray(data.astype(data.dtype.newbyteorder("<")))
    height, width = data.shape
    Image = store.types[IMAGE_TYPE]
    return Image(header=_header(store, stamp_ns, frame_id), height=height, width=width, encoding=encoding,
                 is_bigendian=0, step=width * data.dtype.itemsize, data=data.view(np.uint8).reshape(-1))


def camera_info_message(store, fields: Dict, stamp_ns: int, frame_id: str):
    """sensor_msgs/CameraInfo from the dataset's ``camera_info`` entry (width, height, d, k, r, p)."""
    try:
        k, d, r, p = (np.asarray(fields[n], np.float64) for n in ("k", "d", "r", "p"))
        width, height = int(fields["width"]), int(fields["height"])
    except (KeyError, TypeError, ValueError) as error:
        raise BagError(f"camera_info entry {fields!r} is incomplete or malformed ({error})") from None
    if k.size != 9 or r.size != 9 or p.size != 12:
        raise BagError(f"camera_info needs k (9), r (9) and p (12) values, got {k.size}, {r.size}, {p.size}")
    CameraInfo = store.types[CAMERA_INFO_TYPE]
    RegionOfInterest = store.types["sensor_msgs/msg/RegionOfInterest"]
    return CameraInfo(header=_header(store, stamp_ns, frame_id), height=height, width=width,
                      distortion_model=str(fields.get("distortion_model", "plumb_bob")), d=d, k=k, r=r, p=p,
                      binning_x=0, binning_y=0,
                      roi=RegionOfInterest(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))


def make_rgbd_bag(coco_json, out, rate: float = 10.0, storage: str = "sqlite3", topic: str = DEFAULT_IMAGE_TOPIC,
                  depth_topic: str = DEFAULT_DEPTH_TOPIC, camera_info_topic: str = DEFAULT_CAMERA_INFO_TOPIC,
                  depth_encoding: str = "16UC1", frame_id: str = "camera_color_optical_frame",
                  start_ns: int = DEFAULT_START_NS, max_frames: Optional[int] = None,
                  known_class_names: Optional[Sequence[str]] = None, progress: bool = True) -> BagSummary:
    """Write the RGB-D bag folder ``out`` and its ``groundtruth.json``; return a summary."""
    coco_json = Path(coco_json)
    if not coco_json.is_file():
        raise BagError(f"COCO file {coco_json} does not exist")
    if rate <= 0:
        raise BagError(f"rate must be > 0 Hz, got {rate}")
    if depth_encoding not in DEPTH_ENCODINGS:
        raise BagError(f"depth encoding must be one of {', '.join(DEPTH_ENCODINGS)}, got {depth_encoding!r}")
    with open(coco_json) as f:
        coco = json.load(f)
    dataset_dir = coco_json.parent
    images = sorted(coco["images"], key=lambda im: im["id"])[:max_frames]
    if not images:
        raise BagError(f"COCO file {coco_json} lists no images")
    missing = [im["id"] for im in images if "depth_m_file" not in im or "camera_info" not in im]
    if missing:
        raise BagError(f"{coco_json}: images {missing[:5]} have no depth_m_file/camera_info: not a tabletop "
                       "RGB-D set (make one with training/make_tabletop.py)")
    names = known_class_names or coco.get("info", {}).get("known_classes")
    known = known_categories(coco, names)
    store = bag_typestore()
    period_ns = int(round(1e9 / rate))
    frames = []
    writer = open_writer(out, storage)
    try:
        connections = {t: writer.add_connection(t, msgtype, typestore=store, offered_qos_profiles=[RELIABLE_QOS])
                       for t, msgtype in ((topic, IMAGE_TYPE), (depth_topic, IMAGE_TYPE),
                                          (camera_info_topic, CAMERA_INFO_TYPE))}
        for index, entry in enumerate(tqdm(images, desc="rgb-d bag frames", unit="frame", disable=not progress)):
            path = dataset_dir / "images" / entry["file_name"]
            bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if bgr is None:
                raise BagError(f"cannot read image {path} (image id {entry['id']} of {coco_json})")
            try:
                depth_m = read_depth_m(str(dataset_dir), entry)
            except ValueError as error:
                raise BagError(str(error)) from None
            stamp = int(start_ns) + index * period_ns
            side_log = stamp - SIDE_CHANNEL_LEAD_NS
            writer.write(connections[depth_topic], side_log, store.serialize_cdr(
                depth_message(store, depth_m, depth_encoding, stamp, frame_id), IMAGE_TYPE))
            writer.write(connections[camera_info_topic], side_log, store.serialize_cdr(
                camera_info_message(store, entry["camera_info"], stamp, frame_id), CAMERA_INFO_TYPE))
            writer.write(connections[topic], stamp, store.serialize_cdr(
                image_message(store, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), stamp, frame_id), IMAGE_TYPE))
            frames.append({"stamp_ns": stamp, "image_id": entry["id"], "file_name": entry["file_name"]})
    finally:
        writer.close()

    gt_path = write_groundtruth(out, coco=coco, images=images, known=known, frames=frames, coco_json=coco_json,
                                topics={"image_topic": topic, "depth_topic": depth_topic,
                                        "depth_encoding": depth_encoding, "camera_info_topic": camera_info_topic},
                                frame_id=frame_id, rate=rate)
    return BagSummary(Path(out), len(frames), topic, gt_path, (len(frames) - 1) * period_ns / 1e9)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m semseg_ros.bag_tools.rgbd_bag",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--coco", required=True, help="annotations.json of a tabletop RGB-D set")
    parser.add_argument("--out", required=True, help="bag folder to create (must not exist)")
    parser.add_argument("--rate", type=float, default=10.0, help="frame rate in Hz (default 10)")
    parser.add_argument("--storage", choices=sorted(STORAGES), default="sqlite3")
    parser.add_argument("--topic", default=DEFAULT_IMAGE_TOPIC, help=f"colour topic (default {DEFAULT_IMAGE_TOPIC})")
    parser.add_argument("--depth-topic", default=DEFAULT_DEPTH_TOPIC, help=f"default {DEFAULT_DEPTH_TOPIC}")
    parser.add_argument("--camera-info-topic", default=DEFAULT_CAMERA_INFO_TOPIC,
                        help=f"default {DEFAULT_CAMERA_INFO_TOPIC}")
    parser.add_argument("--depth-encoding", choices=DEPTH_ENCODINGS, default="16UC1",
                        help="16UC1 millimetres (as most RGB-D drivers) or 32FC1 metres")
    parser.add_argument("--max-frames", type=int, default=None)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        summary = make_rgbd_bag(args.coco, args.out, args.rate, args.storage, args.topic, args.depth_topic,
                                args.camera_info_topic, args.depth_encoding, max_frames=args.max_frames,
                                progress=not args.quiet)
    except (BagError, OSError, ValueError, KeyError) as error:
        print(f"{os.path.basename(sys.argv[0])}: error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {summary.frames} RGB-D frames to {summary.path}; ground truth {summary.groundtruth_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
