"""Replay + record through the live node (real rclpy and Fast DDS on loopback, the node in a child
process): every frame answered once, stamps one to one, and the recording's score equals the
evaluator's result on the same predictions made offline by the Predictor."""
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from semseg_core import Predictor
from semseg_core.data.synthetic import generate_dataset
from semseg_core.evaluation import OpenSetEvaluator, results_to_coco
from semseg_ros.bag_tools import replay as replay_module
from semseg_ros.bag_tools.bag_io import BagError
from semseg_ros.bag_tools.make_bag import load_groundtruth, make_bag
from semseg_ros.bag_tools.recording import load_recording
from semseg_ros.bag_tools.node_process import NodeProcess
from semseg_ros.bag_tools.replay import NodeSpec, ReplayError, replay
from semseg_ros.bag_tools.score import score_recording
from semseg_ros.parameters import SPECS, postprocess_options

NUM_FRAMES = 30


@pytest.fixture(scope="module")
def replayed(tmp_path_factory, tiny_weights):
    root = tmp_path_factory.mktemp("replay")
    coco_json = generate_dataset(str(root / "scenes"), NUM_FRAMES, seed=123, image_size=128, progress=False)
    bag = root / "camera_bag"
    make_bag(coco_json, bag, rate=30.0, storage="mcap", progress=False)
    spec = NodeSpec(params={"weights": tiny_weights, "process_every_frame": "true", "num_threads": "1",
                            "image_qos.reliability": "reliable", "queue_size": "100"},
                    log_path=root / "node.log", startup_timeout_s=120)
    summary = replay(bag, root / "recording", storage="sqlite3", every_frame=True, start_node=spec,
                     answer_timeout_s=60, progress=False)
    return root, Path(coco_json), bag, summary


@pytest.mark.timeout(300)
def test_every_frame_answered_once_with_matching_stamps(replayed):
    root, _, bag, summary = replayed
    assert (summary.frames, summary.answered, summary.unanswered) == (NUM_FRAMES, NUM_FRAMES, 0)
    stamps = sorted(f["stamp_ns"] for f in load_groundtruth(bag)["frames"])
    recording = load_recording(root / "recording")
    assert sorted(recording.sent_ns) == stamps
    assert sorted(recording.detections) == stamps
    assert sorted(recording.masks) == stamps
    assert recording.duplicates == 0
    for stamp in stamps:  # an answer never arrives before its frame was sent
        assert recording.detections[stamp].receipt_ns > recording.sent_ns[stamp]


@pytest.mark.timeout(300)
def test_score_equals_offline_predictor(replayed, tiny_weights):
    root, coco_json, bag, _ = replayed
    report = score_recording(root / "recording")
    assert report["frames"]["answered"] == NUM_FRAMES and report["latency"]["count"] == NUM_FRAMES

    gt = load_groundtruth(bag)
    torch.set_num_threads(1)  # same as the node: identical float results
    predictor = Predictor(weights=tiny_weights)
    options = postprocess_options({name: spec.default for name, spec in SPECS.items()})  # the node's defaults
    offline = []
    for frame in gt["frames"]:
        bgr = cv2.imread(str(coco_json.parent / "images" / frame["file_name"]))
        result = predictor(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), options=options)
        offline += results_to_coco(frame["image_id"], result, gt["known_category_ids"])
    assert len(offline) > 0, "the random-weight model is expected to detect something"
    expected = OpenSetEvaluator(gt["coco"], gt["known_category_ids"]).evaluate(offline)
    assert report["detections"]["known"] + report["detections"]["unknown"] == len(offline)
    for iou_type in expected:
        for key, value in expected[iou_type].items():
            got = report["metrics"][iou_type][key]
            if isinstance(value, float) and math.isnan(value):
                assert math.isnan(got), (iou_type, key)
            else:
                assert got == value, (iou_type, key, got, value)


def test_bag_without_image_topic_is_refused(tmp_path):
    coco_json = generate_dataset(str(tmp_path / "scenes"), 2, seed=1, image_size=64, progress=False)
    bag = tmp_path / "bag"
    make_bag(coco_json, bag, topic="/other/image", camera_info_topic=None, progress=False)
    with pytest.raises(BagError, match="/camera/image_raw"):
        replay(bag, tmp_path / "rec", image_topic="/camera/image_raw", progress=False)
    assert replay_module.main(["--bag", str(tmp_path / "missing"), "--out", str(tmp_path / "r")]) == 2


def test_node_that_cannot_start_is_reported(tmp_path):
    coco_json = generate_dataset(str(tmp_path / "scenes"), 2, seed=1, image_size=64, progress=False)
    bag = tmp_path / "bag"
    make_bag(coco_json, bag, progress=False)
    spec = NodeSpec(params={"device": "tpu"}, log_path=tmp_path / "node.log", startup_timeout_s=60)
    with pytest.raises(ReplayError, match="exited with code"):
        replay(bag, tmp_path / "rec", start_node=spec, progress=False)
    assert "device" in (tmp_path / "node.log").read_text()


@pytest.mark.timeout(300)
def test_cli_timed_replay_keeps_bag_timing(tmp_path, tiny_weights, capsys):
    """Bag timing at --rate 2: frames 1 s apart in the bag are published 0.5 s apart; a node in its
    default latest-frame mode keeps up with that and answers each one. The input is reliable here: a frame the
    best-effort default loses on a loaded machine is transport, not timing (the next test covers that)."""
    coco_json = generate_dataset(str(tmp_path / "scenes"), 4, seed=9, image_size=96, progress=False)
    bag = tmp_path / "bag"
    make_bag(coco_json, bag, rate=1.0, progress=False)
    code = replay_module.main(["--bag", str(bag), "--out", str(tmp_path / "rec"), "--rate", "2", "--start-node",
                               "--weights", tiny_weights, "--param", "num_threads:=1", "--quiet",
                               "--param", "image_qos.reliability:=reliable", "--storage", "mcap"])
    printed = capsys.readouterr()
    assert code == 0, printed.out + printed.err + (tmp_path / "rec.node.log").read_text()
    assert "4 answered, 0 unanswered" in printed.out
    recording = load_recording(tmp_path / "rec")
    sent = [recording.sent_ns[s] for s in sorted(recording.sent_ns)]
    gaps_s = np.diff(sent) / 1e9
    assert np.all(np.abs(gaps_s - 0.5) < 0.05), gaps_s
    assert recording.custom["mode"] == "timed" and (tmp_path / "rec.node.log").is_file()


BUSY = "(the model was busy: replaced by a newer frame in latest-frame mode, or the every-frame queue was full)"


@pytest.mark.timeout(300)
def test_unanswered_frames_are_explained_by_the_node_accounting(tmp_path, tiny_weights, capsys):
    """Frames 10 ms apart into a latest-frame node that needs ~100 ms each: most are replaced while it is busy.
    The CLI fails and says where they went, from the node's own /diagnostics: with reliable input every frame
    arrives, so every unanswered one is a dropped one. Twice into the same running node: the second replay
    reports its own 12 frames, not the node's 24."""
    frames = 12
    coco_json = generate_dataset(str(tmp_path / "scenes"), frames, seed=4, image_size=96, progress=False)
    bag = tmp_path / "bag"
    make_bag(coco_json, bag, rate=1.0, progress=False)
    spec = NodeSpec(params={"weights": tiny_weights, "num_threads": "1", "image_qos.reliability": "reliable"},
                    log_path=tmp_path / "node.log", startup_timeout_s=120)
    node = NodeProcess(replay_module.DEFAULT_NODE_NAME, "", load_groundtruth(bag)["image_topic"], spec)
    try:
        for run in range(2):
            code = replay_module.main(["--bag", str(bag), "--out", str(tmp_path / f"rec{run}"), "--rate", "100",
                                       "--quiet", "--drain-timeout", "3"])
            printed = capsys.readouterr().out
            assert code == 1, printed + (tmp_path / "node.log").read_text()
            answered = int(printed.split(" answered, ")[0].rsplit(" ", 1)[1])
            unanswered = frames - answered
            assert 0 < unanswered < frames and f"{answered} answered, {unanswered} unanswered" in printed
            assert (f"the node reports: received {frames} of {frames}, processed {answered}, dropped {unanswered} "
                    f"{BUSY}, rejected 0, failed 0") in printed, printed
            assert "never reached it" not in printed
    finally:
        node.stop()


def test_explanation_names_frames_that_never_arrived():
    summary = replay_module.ReplaySummary(Path("rec"), "timed", 10, 7, 3, 1.0, {
        "frames_received": 8, "frames_processed": 7, "frames_dropped": 1, "frames_rejected": 0, "frames_failed": 0,
        "frames_lost_in_transport": 2})
    assert summary.explain() == (
        f"the node reports: received 8 of 10, processed 7, dropped 1 {BUSY}, rejected 0, failed 0; 2 never "
        f"reached it (the middleware counted 2 as lost): best-effort input drops frames under load, "
        f"--param image_qos.reliability:=reliable makes the transport resend them")
    assert replay_module.ReplaySummary(Path("rec"), "timed", 10, 10, 0, 1.0, {}).explain() == ""
    assert "no /diagnostics" in replay_module.ReplaySummary(Path("rec"), "timed", 10, 9, 1, 1.0, {}).explain()
