"""RGB-D bags from tabletop scenes, 3D scoring, and the RGB-D demo through the live node (use_depth:=true)."""
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from semseg_core.data.tabletop import generate_tabletop_dataset, read_depth_m
from semseg_core.data.tabletop_assets import builtin_assets
from semseg_core.data.tabletop_camera import CameraIntrinsics
from semseg_core.data.tabletop_scene import SceneOptions
from semseg_ros.bag_tools.bag_io import iter_messages, open_reader
from semseg_ros.bag_tools.make_bag import load_groundtruth
from semseg_ros.bag_tools.recording import header_stamp_ns, load_recording
from semseg_ros.bag_tools.rgbd_bag import make_rgbd_bag
from semseg_ros.bag_tools.score import decode_frame
from semseg_ros.bag_tools.score_3d import _messages_by_stamp, box_error, match_by_mask
from semseg_ros.bag_tools.typestore import CAMERA_INFO_TYPE, DETECTIONS_3D_TYPE, IMAGE_TYPE, bag_typestore
from semseg_ros.depth import Intrinsics, instance_boxes_3d
from semseg_ros.image_codec import depth_to_meters, image_msg_to_numpy

SMALL_CAMERA = CameraIntrinsics(width=320, height=240, fx=300.0, fy=300.0, cx=159.5, cy=119.5)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("tabletop_rgbd")
    json_path = generate_tabletop_dataset(str(root / "scenes"), builtin_assets(num_unknown=10), 2, seed=4,
                                          split="test", intrinsics=SMALL_CAMERA,
                                          options=SceneOptions(min_objects=3, max_objects=4), progress=False)
    return root, json_path


@pytest.mark.parametrize("encoding", ["16UC1", "32FC1"])
def test_rgbd_bag_holds_aligned_depth_and_the_real_camera_info(scenes, tmp_path, encoding):
    root, json_path = scenes
    summary = make_rgbd_bag(json_path, tmp_path / "bag", depth_encoding=encoding, progress=False)
    gt = load_groundtruth(summary.path)
    doc = json.load(open(json_path))
    store = bag_typestore()
    seen = {}
    with open_reader(summary.path) as reader:
        for connection, log_time, raw in iter_messages(reader):
            msgtype = CAMERA_INFO_TYPE if connection.topic == gt["camera_info_topic"] else IMAGE_TYPE
            msg = store.deserialize_cdr(raw, msgtype)
            seen.setdefault(header_stamp_ns(msg), {})[connection.topic] = (log_time, msg)
    assert sorted(seen) == [f["stamp_ns"] for f in gt["frames"]]
    for frame, image in zip(gt["frames"], doc["images"]):
        by_topic = seen[frame["stamp_ns"]]
        image_log, _ = by_topic[gt["image_topic"]]
        depth_log, depth_msg = by_topic[gt["depth_topic"]]
        info_log, info = by_topic[gt["camera_info_topic"]]
        assert depth_log < image_log and info_log < image_log  # a replay delivers depth before its image
        assert list(info.k) == [300.0, 0.0, 159.5, 0.0, 300.0, 119.5, 0.0, 0.0, 1.0]
        assert (info.width, info.height) == (320, 240)
        depth, got_encoding = image_msg_to_numpy(depth_msg)
        truth = read_depth_m(str(root / "scenes"), image)
        assert got_encoding == encoding
        if encoding == "16UC1":
            assert np.array_equal(depth, np.round(truth * 1000).astype(np.uint16))
        else:
            assert np.array_equal(depth, truth)
    assert gt["coco"]["annotations"][0]["camera_box"]["size_m"]  # poses travel with the ground truth


def test_box_error_by_hand():
    err = box_error([0.0, 0.0, 1.0], [0.1, 0.2, 0.3], [0.003, 0.004, 1.0], [0.1, 0.1, 0.1])
    assert err["centroid_mm"] == pytest.approx(5.0)           # 3-4-5 triangle in millimetres
    assert err["extent_mm"] == pytest.approx((0 + 100 + 200) / 3)


def test_match_by_mask_is_greedy_one_to_one_above_half_iou():
    label = np.zeros((10, 10), np.uint16)
    label[0:4, 0:4] = 1                     # = ground truth 0 exactly
    label[5:10, 0:2] = 2                    # 10 px inside ground truth 1 (25 px): IoU 0.4, no match
    label[0:4, 5:9] = 3                     # ground truth 2 has one more column: IoU 16/20 = 0.8
    gt = [np.zeros((10, 10), bool) for _ in range(3)]
    gt[0][0:4, 0:4] = True
    gt[1][5:10, 0:5] = True
    gt[2][0:4, 5:10] = True
    assert match_by_mask(label, gt) == {1: 0, 3: 2}


@pytest.mark.ros
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_tabletop_demo_through_the_node_with_depth(tmp_path):
    """The demo as a user runs it, with the embedded tabletop model: exit 0, a 3D answer for every frame, and every
    Detection3D is the node's depth rule applied to its own label image, the bag's depth and the bag's camera_info
    (so the node used the right depth and intrinsics)."""
    out = tmp_path / "demo"
    command = [sys.executable, "-m", "semseg_ros.demo_tabletop", "--num-frames", "2",
               "--out", str(out), "--storage", "sqlite3", "--param", "num_threads:=1",
               "--param", "depth_min_points:=1"]
    run = subprocess.run(command, capture_output=True, text=True, timeout=280)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    for text in ("AP_k", "AR_unk@100", "3D (Detection3DArray vs true object boxes)", "oracle masks", "2/2 answered"):
        assert text in run.stdout, text
    section = json.loads((out / "report" / "detections_3d.json").read_text())
    assert section["counts"]["frames_with_3d"] == 2
    assert section["oracle_masks"]["all"]["count"] == section["counts"]["ground_truth"] > 0

    recording = load_recording(out / "recording")
    gt = load_groundtruth(out / "input_bag")
    detections = _messages_by_stamp(out / "recording", recording.custom["detections_3d_topic"], DETECTIONS_3D_TYPE)
    depths = _messages_by_stamp(out / "input_bag", gt["depth_topic"], IMAGE_TYPE)
    info = gt["coco"]["images"][0]["camera_info"]
    k = info["k"]
    intrinsics = Intrinsics(fx=k[0], fy=k[4], cx=k[2], cy=k[5], width=info["width"], height=info["height"])
    compared = 0
    for stamp, message in detections.items():
        depth, encoding = image_msg_to_numpy(depths[stamp])
        label = decode_frame(recording, stamp).label_image
        expected = {b.instance_id: b for b in instance_boxes_3d(np.asarray(label), depth_to_meters(depth, encoding),
                                                                intrinsics, min_points=1)}
        assert sorted(int(d.id) for d in message.detections) == sorted(expected)
        for det in message.detections:
            box = expected[int(det.id)]
            c, s = det.bbox.center.position, det.bbox.size
            assert [c.x, c.y, c.z] == pytest.approx(box.center.tolist(), abs=1e-6)
            assert [s.x, s.y, s.z] == pytest.approx(box.size.tolist(), abs=1e-6)
            compared += 1
    assert compared > 0
    assert cv2.VideoCapture(str(out / "overlay.mp4")).isOpened() or (out / "overlay_frames.png").is_file()


def test_demo_with_a_missing_model_file_says_so_before_doing_anything(tmp_path):
    missing = tmp_path / "nowhere.pth"
    for module in (["semseg_ros.demo_tabletop"], ["semseg_ros.demo", "--scenes", "tabletop"]):
        run = subprocess.run([sys.executable, "-m", *module, "--weights", str(missing), "--out", str(tmp_path)],
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 1 and f"--weights file not found: {missing}" in run.stderr
    assert not (tmp_path / "scenes").exists()  # refused before doing anything
