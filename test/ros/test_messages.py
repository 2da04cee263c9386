"""Result -> messages and the debug overlay (no DDS traffic)."""
from dataclasses import dataclass, field

import numpy as np
import pytest

from std_msgs.msg import Header

from semseg_ros import messages
from semseg_ros.depth import Box3D
from semseg_ros.image_codec import image_msg_to_numpy
from semseg_ros.overlay import draw_overlay


@dataclass
class FakeResult:  # the Result contract's fields (CONTRACTS.md), for pure-function tests
    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    class_names: list
    is_known: np.ndarray
    unknown_scores: np.ndarray
    masks: np.ndarray
    label_image: np.ndarray
    inference_time_s: float = 0.01
    extra: dict = field(default_factory=dict)


def _paint(masks):
    """uint16 label image, value k = instance k-1; the earlier (higher-scoring) instance wins overlaps."""
    label = np.zeros(masks.shape[1:], np.uint16)
    for index in range(len(masks) - 1, -1, -1):
        label[masks[index]] = index + 1
    return label


def _result():
    masks = np.zeros((3, 40, 60), bool)
    masks[0, 5:20, 5:30] = True
    masks[1, 10:30, 20:50] = True   # overlaps instance 0, which scores higher
    masks[2, 30:38, 2:10] = True
    boxes = np.array([[5, 5, 30, 20], [20, 10, 50, 30], [2, 30, 10, 38]], np.float32)
    return FakeResult(boxes=boxes, scores=np.array([0.9, 0.6, 0.2], np.float32),
                      class_ids=np.array([2, 1000, 0]), class_names=["ring", "unknown", "box"],
                      is_known=np.array([True, False, True]),
                      unknown_scores=np.array([0.01, 0.5, 0.3], np.float32), masks=masks,
                      label_image=_paint(masks))


def test_label_image_higher_score_wins_overlaps():
    result = _result()
    assert result.label_image[15, 25] == 1 and result.label_image[25, 40] == 2
    assert set(np.unique(result.label_image)) == {0, 1, 2, 3}


def test_detections_carry_header_names_and_label_ids():
    result = _result()
    header = Header(frame_id="camera_optical")
    header.stamp.sec, header.stamp.nanosec = 12, 345
    array = messages.detection2d_array(result, header)
    assert array.header == header and len(array.detections) == 3
    first = array.detections[1]
    assert first.header == header and first.id == "2"
    assert first.results[0].hypothesis.class_id == "1000"  # UNKNOWN_ID, the id LabelInfo maps to "unknown"
    assert [d.results[0].hypothesis.class_id for d in array.detections] == ["2", "1000", "0"]
    assert abs(first.results[0].hypothesis.score - 0.6) < 1e-6
    assert (first.bbox.center.position.x, first.bbox.center.position.y) == (35.0, 20.0)
    assert (first.bbox.size_x, first.bbox.size_y) == (30.0, 20.0)
    mask_msg = messages.instance_mask_image(result.label_image, header)
    assert mask_msg.encoding == "mono16" and mask_msg.header == header
    np.testing.assert_array_equal(image_msg_to_numpy(mask_msg)[0], result.label_image)


def test_label_info_maps_known_indices_and_unknown():
    info = messages.label_info(["box", "disc"], Header(), 0.3)
    assert [(c.class_id, c.class_name) for c in info.class_map] == [
        (0, "box"), (1, "disc"), (1000, "unknown")]
    assert info.threshold == pytest.approx(0.3)


def test_label_info_decodes_the_published_class_ids():
    """What a consumer does (vision_msgs): look each class_id up in LabelInfo.class_map."""
    result = _result()
    info = messages.label_info(["box", "disc", "ring"], Header(), 0.3)
    names_by_id = messages.class_map(info)
    array = messages.detection2d_array(result, Header())
    decoded = [messages.class_name(d.results[0].hypothesis.class_id, names_by_id) for d in array.detections]
    assert decoded == ["ring", "unknown", "box"]


def test_class_id_format_name_publishes_names_and_readers_accept_both():
    result = _result()
    array = messages.detection2d_array(result, Header(), class_id_format="name")
    assert [d.results[0].hypothesis.class_id for d in array.detections] == ["ring", "unknown", "box"]
    names_by_id = {0: "box", 2: "ring", 1000: "unknown"}
    assert [messages.class_name(d.results[0].hypothesis.class_id, names_by_id)
            for d in array.detections] == ["ring", "unknown", "box"]
    with pytest.raises(ValueError, match="class_id '7' is not in the detector's LabelInfo"):
        messages.class_name("7", names_by_id)
    with pytest.raises(ValueError, match="class_id_format"):
        messages.detection2d_array(result, Header(), class_id_format="number")


def test_detection3d_uses_instance_ids():
    result = _result()
    boxes = [Box3D(3, np.array([0.1, 0.2, 2.0]), np.array([0.3, 0.2, 0.01]), 50)]
    array = messages.detection3d_array(result, boxes, Header(frame_id="cam"))
    (detection,) = array.detections
    assert detection.id == "3" and detection.results[0].hypothesis.class_id == "0"  # class "box"
    named = messages.detection3d_array(result, boxes, Header(frame_id="cam"), class_id_format="name")
    assert named.detections[0].results[0].hypothesis.class_id == "box"
    assert detection.bbox.center.position.z == 2.0 and detection.bbox.size.x == 0.3


def test_overlay_draws_known_and_unknown_differently():
    result = _result()
    image = np.zeros((40, 60, 3), np.uint8)
    overlay = draw_overlay(image, result)
    assert overlay.shape == image.shape and not np.shares_memory(overlay, image)
    assert image.max() == 0                                  # input untouched
    known_pixels = overlay[12:18, 8:12]                     # inside instance 1 away from text
    assert known_pixels.any()
    unknown_region = overlay[22:29, 32:48]                   # hatched: some pixels stay dark
    assert unknown_region.any() and (unknown_region.sum(axis=2) == 0).any()
