"""semseg-score-bag on a recording written directly with rosbags (answers made from the ground truth,
one frame left unanswered; class_id as LabelInfo ids on even frames, as names on odd ones): the score equals
the evaluator's result on the same detections, the per-object figures are those of a perfect answer with one
frame missing, frame accounting and latency are right, and the report folder is complete."""
import json
import math

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from semseg_core.data.synthetic import generate_dataset
from semseg_core.evaluation import OpenSetEvaluator, instances_to_coco
from semseg_ros.bag_tools import score as score_module
from semseg_ros.bag_tools.bag_io import BagError
from semseg_ros.bag_tools.make_bag import load_groundtruth, make_bag
from semseg_ros.bag_tools.recording import RecordingWriter, class_name_of, load_recording
from semseg_ros.bag_tools.report import write_report
from semseg_ros.bag_tools.score import score_recording
from semseg_ros.bag_tools.typestore import DETECTIONS_TYPE, IMAGE_TYPE, LABEL_INFO_TYPE, bag_typestore

NUM_IMAGES = 8
DET_TOPIC, MASK_TOPIC = "/perception_node/detections", "/perception_node/instance_mask"
LABEL_TOPIC = "/perception_node/label_info"
T0 = 5_000_000_000_000
UNKNOWN_ID = 1000


def label_info_message(store, names):
    """LabelInfo as the node latches it: known class k -> id k, unknown -> 1000."""
    t = store.types
    classes = [t["vision_msgs/msg/VisionClass"](class_id=k, class_name=n) for k, n in enumerate(names)]
    classes.append(t["vision_msgs/msg/VisionClass"](class_id=UNKNOWN_ID, class_name="unknown"))
    header = t["std_msgs/msg/Header"](stamp=t["builtin_interfaces/msg/Time"](sec=1, nanosec=0), frame_id="")
    return store.serialize_cdr(t[LABEL_INFO_TYPE](header=header, class_map=classes, threshold=0.3), LABEL_INFO_TYPE)


def answer_messages(store, header, instances):
    """Detection2DArray + mono16 label image for (name, score, mask) instances, ids 1..N."""
    t = store.types
    label = np.zeros(instances[0][2].shape if instances else (1, 1), np.uint16)
    detections = []
    for index, (name, score, mask) in enumerate(instances):
        label[mask & (label == 0)] = index + 1
        ys, xs = np.nonzero(mask)
        x0, y0, x1, y1 = float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)
        bbox = t["vision_msgs/msg/BoundingBox2D"](
            center=t["vision_msgs/msg/Pose2D"](position=t["vision_msgs/msg/Point2D"](x=(x0 + x1) / 2, y=(y0 + y1) / 2),
                                               theta=0.0),
            size_x=x1 - x0, size_y=y1 - y0)
        pose = t["geometry_msgs/msg/PoseWithCovariance"](
            pose=t["geometry_msgs/msg/Pose"](position=t["geometry_msgs/msg/Point"](x=0.0, y=0.0, z=0.0),
                                             orientation=t["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0)),
            covariance=np.zeros(36))
        hypothesis = t["vision_msgs/msg/ObjectHypothesisWithPose"](
            hypothesis=t["vision_msgs/msg/ObjectHypothesis"](class_id=name, score=score), pose=pose)
        detections.append(t["vision_msgs/msg/Detection2D"](header=header, results=[hypothesis], bbox=bbox,
                                                           id=str(index + 1)))
    det = t[DETECTIONS_TYPE](header=header, detections=detections)
    h, w = label.shape
    mask_msg = t[IMAGE_TYPE](header=header, height=h, width=w, encoding="mono16", is_bigendian=0, step=w * 2,
                             data=label.view(np.uint8).reshape(-1))
    return store.serialize_cdr(det, DETECTIONS_TYPE), store.serialize_cdr(mask_msg, IMAGE_TYPE), label


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """A bag, a recording answering every frame but the last from the ground truth, and the
    detections as the evaluator should see them."""
    root = tmp_path_factory.mktemp("score")
    coco_json = generate_dataset(str(root / "scenes"), NUM_IMAGES, seed=5, image_size=96, progress=False)
    bag = root / "input_bag"
    make_bag(coco_json, bag, rate=10.0, storage="mcap", progress=False)
    gt = load_groundtruth(bag)
    coco = COCO(coco_json)
    known_ids = gt["known_category_ids"]
    names = {c["id"]: c["name"] for c in coco.dataset["categories"]}
    store = bag_typestore()
    writer = RecordingWriter(root / "recording", "sqlite3",
                             {DET_TOPIC: DETECTIONS_TYPE, MASK_TOPIC: IMAGE_TYPE, LABEL_TOPIC: LABEL_INFO_TYPE},
                             {"input_bag": str(bag), "detections_topic": DET_TOPIC, "instance_mask_topic": MASK_TOPIC,
                              "label_info_topic": LABEL_TOPIC})
    writer.write_output(LABEL_TOPIC, label_info_message(store, gt["known_class_names"]), T0 - 1)
    expected, latencies = [], []
    objects = {"known": 0, "unknown": 0, "known_answered": 0, "unknown_answered": 0}
    for index, frame in enumerate(gt["frames"]):
        sent = T0 + index * 100_000_000
        writer.write_sent(frame["stamp_ns"], sent)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[frame["image_id"]]))
        for a in anns:
            kind = "known" if a["category_id"] in known_ids else "unknown"
            objects[kind] += 1
            objects[kind + "_answered"] += int(index != NUM_IMAGES - 1)
        if index == NUM_IMAGES - 1:
            continue  # the node "dropped" the last frame
        if index % 2 == 0:  # the id form (the node's default), decoded through the recorded LabelInfo
            ids = [str(sorted(known_ids).index(a["category_id"])) if a["category_id"] in known_ids
                   else str(UNKNOWN_ID) for a in anns]
        else:  # the name form
            ids = [names[a["category_id"]] if a["category_id"] in known_ids else "unknown" for a in anns]
        instances = [(class_id, 0.95 - 0.05 * k, coco.annToMask(a).astype(bool))
                     for k, (class_id, a) in enumerate(zip(ids, anns))]
        sec, nsec = divmod(frame["stamp_ns"], 1_000_000_000)
        header = store.types["std_msgs/msg/Header"](
            stamp=store.types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nsec), frame_id="cam")
        det_raw, mask_raw, label = answer_messages(store, header, instances)
        latency = 20_000_000 + index * 1_000_000
        writer.write_output(DET_TOPIC, det_raw, sent + latency - 500_000)
        writer.write_output(MASK_TOPIC, mask_raw, sent + latency)
        latencies.append(latency / 1e6)
        # what an offline evaluation of the same detections sees: the label image's masks, xyxy boxes
        masks = np.stack([label == k + 1 for k in range(len(instances))])
        boxes = []
        for _, _, m in instances:
            ys, xs = np.nonzero(m)
            boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        class_idx = [sorted(known_ids).index(a["category_id"]) if a["category_id"] in known_ids else 1000
                     for a in anns]
        expected += instances_to_coco(frame["image_id"], np.array(boxes, float), [s for _, s, _ in instances],
                                      class_idx, known_ids, masks=masks)
    writer.close()
    report = score_recording(root / "recording")
    return root, gt, report, expected, latencies, objects


def same_metrics(a, b):
    assert a.keys() == b.keys()
    for iou_type in a:
        for key, value in a[iou_type].items():
            other = b[iou_type][key]
            if isinstance(value, float) and math.isnan(value):
                assert math.isnan(other), (iou_type, key)
            else:
                assert value == other, (iou_type, key, value, other)


def test_score_equals_evaluator_on_same_detections(scored):
    _, gt, report, expected, _, _ = scored
    direct = OpenSetEvaluator(gt["coco"], gt["known_category_ids"]).evaluate(expected)
    same_metrics(report["metrics"], direct)
    # answers made from the ground truth: no open-set errors, and every unknown object recalled
    # except those of the unanswered frame
    assert report["metrics"]["segm"]["AOSE"] == 0
    assert report["metrics"]["segm"]["AP_k"] == pytest.approx(known_ap_with_last_frame_missed(gt), abs=1e-9)


def known_ap_with_last_frame_missed(gt):
    """AP_k by hand: every answered object is found with its exact mask, so each known class has precision 1 up to
    its recall (objects outside the unanswered last frame / all its objects) and none beyond; COCO's AP averages
    the precision at 101 recall points (0, 0.01, ..., 1), so a class scores the share of points <= its recall."""
    last_image = gt["frames"][-1]["image_id"]
    recall_points = np.linspace(0.0, 1.0, 101)
    aps = []
    for category_id in gt["known_category_ids"]:
        anns = [a for a in gt["coco"]["annotations"] if a["category_id"] == category_id and not a.get("iscrowd")]
        if anns:  # a class without ground truth has no AP
            recall = sum(a["image_id"] != last_image for a in anns) / len(anns)
            aps.append(np.count_nonzero(recall_points <= recall) / len(recall_points))
    return 100.0 * float(np.mean(aps))


def test_frame_accounting_and_latency(scored):
    _, _, report, expected, latencies, _ = scored
    frames = report["frames"]
    assert frames["in_bag"] == frames["sent"] == NUM_IMAGES
    assert frames["answered"] == NUM_IMAGES - 1 and frames["unanswered"] == 1
    assert frames["not_sent"] == 0 and frames["partial"] == 0 and frames["duplicate_outputs"] == 0
    assert report["latency"]["count"] == NUM_IMAGES - 1
    assert report["latency"]["p50_ms"] == pytest.approx(np.percentile(latencies, 50))
    assert report["latency"]["max_ms"] == pytest.approx(max(latencies))
    span_s = ((NUM_IMAGES - 2) * 0.1 + latencies[-1] / 1e3)
    assert report["throughput_fps"] == pytest.approx((NUM_IMAGES - 1) / span_s)
    assert report["detections"]["known"] + report["detections"]["unknown"] == len(expected)


def test_report_folder(scored, tmp_path):
    root, _, report, _, _, _ = scored
    folder = write_report(report, tmp_path / "report", grid_frames=6)
    data = json.loads((folder / "report.json").read_text())
    assert data["frames"]["answered"] == NUM_IMAGES - 1
    assert set(data["metrics"]) == {"bbox", "segm"}
    assert "AP_k" in (folder / "summary.md").read_text() and "Boundary F" in (folder / "summary.md").read_text()
    assert data["instances"]["detections_per_object"] == pytest.approx(report["instances"]["detections_per_object"])
    for name in ("latency_histogram.png", "per_class_ap.png", "overlay_grid.png"):
        image = cv2.imread(str(folder / name))
        assert image is not None and image.shape[0] > 100, name
    grid = cv2.imread(str(folder / "overlay_grid.png"))
    assert grid.shape[0] == 2 * (256 + 4) + 4  # 6 frames in rows of 4


def test_cli(scored, tmp_path, capsys):
    root = scored[0]
    assert score_module.main(["--recording", str(root / "recording"), "--report", str(tmp_path / "r"),
                              "--grid-frames", "0"]) == 0
    out = capsys.readouterr().out
    assert "AP_k" in out and f"{NUM_IMAGES - 1}/{NUM_IMAGES} answered" in out
    assert score_module.main(["--recording", str(root / "recording"), "--report", str(tmp_path / "r2"),
                              "--detections-topic", "/nope"]) == 2
    assert "/nope" in capsys.readouterr().err
    with pytest.raises(BagError, match="input_bag"):
        score_recording(root / "input_bag", detections_topic="/camera/image_raw",
                        instance_mask_topic="/camera/image_raw")


def test_per_object_figures_of_a_perfect_answer_with_one_frame_missing(scored):
    _, _, report, expected, _, objects = scored
    figures = report["instances"]
    total = objects["known"] + objects["unknown"]
    assert figures["images"] == NUM_IMAGES and figures["detections"] == len(expected)
    assert figures["detections_per_object"] == pytest.approx(len(expected) / total)
    assert figures["empty_detections"] == 0
    # every answered object found with its label; the unanswered frame's objects are missed, none mislabelled
    assert figures["known_recall"] == pytest.approx(objects["known_answered"] / objects["known"])
    assert figures["unknown_recall"] == pytest.approx(objects["unknown_answered"] / objects["unknown"])
    assert figures["known_labelled_unknown"] == 0 and figures["unknown_labelled_known"] == 0
    # per frame: perfect (P = R = 1) on 7 frames; the missing one has P = 1 (nothing said) and R = 0
    assert figures["overlap_p"] == pytest.approx(1.0) and figures["boundary_p"] == pytest.approx(1.0)
    assert figures["overlap_r"] == pytest.approx((NUM_IMAGES - 1) / NUM_IMAGES)
    assert figures["boundary_r"] == pytest.approx((NUM_IMAGES - 1) / NUM_IMAGES)
    assert figures["objects_F075"] == pytest.approx((objects["known_answered"] + objects["unknown_answered"]) / total)


def test_class_ids_are_decoded_through_the_recorded_label_info(scored):
    root = scored[0]
    recording = load_recording(root / "recording")
    assert recording.class_map[UNKNOWN_ID] == "unknown" and recording.class_map[0] == "box"
    assert class_name_of("1000", recording.class_map, "here") == "unknown"
    assert class_name_of("disc", recording.class_map, "here") == "disc"  # the name form passes as it is
    with pytest.raises(BagError, match="class_id 7 is not in the recorded LabelInfo"):
        class_name_of("7", recording.class_map, "detection '1'")
    with pytest.raises(BagError, match="holds no LabelInfo"):
        class_name_of("3", None, "detection '1'")


def test_numeric_class_ids_without_label_info_are_a_clear_error(scored, tmp_path):
    root, gt = scored[0], scored[1]
    store = bag_typestore()
    frame = gt["frames"][0]
    sec, nsec = divmod(frame["stamp_ns"], 1_000_000_000)
    header = store.types["std_msgs/msg/Header"](
        stamp=store.types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nsec), frame_id="cam")
    mask = np.zeros((96, 96), bool)
    mask[10:20, 10:20] = True
    det_raw, mask_raw, _ = answer_messages(store, header, [("2", 0.9, mask)])
    writer = RecordingWriter(tmp_path / "rec", "sqlite3", {DET_TOPIC: DETECTIONS_TYPE, MASK_TOPIC: IMAGE_TYPE},
                             {"input_bag": str(root / "input_bag"), "detections_topic": DET_TOPIC,
                              "instance_mask_topic": MASK_TOPIC})
    writer.write_sent(frame["stamp_ns"], T0)
    writer.write_output(DET_TOPIC, det_raw, T0 + 1)
    writer.write_output(MASK_TOPIC, mask_raw, T0 + 2)
    writer.close()
    with pytest.raises(BagError, match="numeric id, but the recording holds no LabelInfo"):
        score_recording(tmp_path / "rec")
