"""Predictor Result -> ROS messages, and the class-id rule their readers decode with.

Class ids, as vision_msgs says consumers read them (``ObjectHypothesis.class_id`` is looked up in the
``LabelInfo.class_map`` of the detector's latched ``~/label_info``):
- ``LabelInfo.class_map`` maps numeric ids to names: the known classes keep the model's contiguous index
  0..K-1, ``unknown`` has id 1000 (``semseg_core.constants.UNKNOWN_ID``).
- ``Detection2D.results[0].hypothesis.class_id`` is that id as a decimal string ("0".."K-1", "1000");
  with the node parameter ``class_id_format:=name`` it is the class name instead (a known name or
  ``unknown``) for consumers that want names. ``class_name`` below reads both forms.
- ``score`` is the detection score (known-class or unknown score, whichever the instance is).
- ``LabelInfo.threshold`` is ``known_score_threshold``: the minimum score of a published known-class
  detection. Unknown detections have their own minimum, the node parameter ``unknown_score_threshold``
  (``ros2 param get <node> unknown_score_threshold``); the two are never mixed into one number.
- ``Detection2D.id`` is the instance's value in the ``~/instance_mask`` label image, as a decimal
  string ("1".."N"; 0 in the label image is background). The same id is used in ``~/detections_3d``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Dict, Mapping, Sequence

import numpy as np
from geometry_msgs.msg import Point, Quaternion, Vector3
from sensor_msgs.msg import Image
from std_msgs.msg import Header
from vision_msgs.msg import (BoundingBox2D, BoundingBox3D, Detection2D, Detection2DArray,
                             Detection3D, Detection3DArray, LabelInfo, ObjectHypothesisWithPose,
                             VisionClass)

from semseg_core.constants import UNKNOWN_ID, UNKNOWN_NAME
from semseg_ros.depth import Box3D
from semseg_ros.image_codec import numpy_to_image_msg

if TYPE_CHECKING:  # for the annotations only: semseg_core.predictor imports torch, these messages need none
    from semseg_core.predictor import Result


CLASS_ID_FORMATS = ("id", "name")


def class_id_text(result: Result, index: int, class_id_format: str = "id") -> str:
    """``ObjectHypothesis.class_id`` of instance ``index``: the LabelInfo id as decimal text, or the name."""
    if class_id_format == "name":
        return result.class_names[index]
    if class_id_format != "id":
        raise ValueError(f"class_id_format must be one of {', '.join(CLASS_ID_FORMATS)}, got {class_id_format!r}")
    return str(int(result.class_ids[index]))


def class_map(label_info_msg: LabelInfo) -> Dict[int, str]:
    """{numeric id: name} of a LabelInfo message (rclpy or rosbags message alike)."""
    return {int(c.class_id): c.class_name for c in label_info_msg.class_map}


def class_name(class_id: str, names_by_id: Mapping[int, str]) -> str:
    """The class name of an ``ObjectHypothesis.class_id``: decimal ids through ``names_by_id`` (from
    ``class_map``), a name as it is. A decimal id that the map lacks is a ValueError naming both."""
    text = class_id.strip()
    if not text.isdigit():
        return class_id  # the name form (class_id_format:=name)
    try:
        return names_by_id[int(text)]
    except KeyError:
        known = ", ".join(f"{k}={v}" for k, v in sorted(names_by_id.items())) or "no LabelInfo received"
        raise ValueError(f"class_id {class_id!r} is not in the detector's LabelInfo class_map ({known})") from None


def _hypothesis(class_id: str, score: float) -> ObjectHypothesisWithPose:
    hypothesis = ObjectHypothesisWithPose()
    hypothesis.hypothesis.class_id = class_id
    hypothesis.hypothesis.score = float(score)
    return hypothesis


def detection2d_array(result: Result, header: Header, class_id_format: str = "id") -> Detection2DArray:
    """Detection2DArray for every instance of ``result``, ids matching the label image."""
    array = Detection2DArray(header=header)
    detections = []
    for i in range(len(result.scores)):
        x0, y0, x1, y1 = (float(v) for v in result.boxes[i])
        bbox = BoundingBox2D()
        bbox.center.position.x = (x0 + x1) / 2.0
        bbox.center.position.y = (y0 + y1) / 2.0
        bbox.size_x = x1 - x0
        bbox.size_y = y1 - y0
        hypothesis = _hypothesis(class_id_text(result, i, class_id_format), result.scores[i])
        detections.append(Detection2D(header=header, results=[hypothesis], bbox=bbox, id=str(i + 1)))
    array.detections = detections
    return array


def instance_mask_image(label_image: np.ndarray, header: Header) -> Image:
    """The uint16 label image as a mono16 sensor_msgs/Image (native byte order)."""
    return numpy_to_image_msg(label_image, "mono16", header=header)


def label_info(class_names: Sequence[str], header: Header, known_score_threshold: float) -> LabelInfo:
    """LabelInfo: known class index -> name, plus ``unknown`` at id 1000; threshold = the known-class minimum."""
    class_map = [VisionClass(class_id=i, class_name=name) for i, name in enumerate(class_names)]
    class_map.append(VisionClass(class_id=UNKNOWN_ID, class_name=UNKNOWN_NAME))
    return LabelInfo(header=header, class_map=class_map, threshold=float(known_score_threshold))


def detection3d_array(result: Result, boxes_3d: Sequence[Box3D], header: Header,
                      class_id_format: str = "id") -> Detection3DArray:
    """Detection3DArray (camera optical frame, metres) for instances that had enough depth pixels."""
    array = Detection3DArray(header=header)
    detections = []
    for box in boxes_3d:
        index = box.instance_id - 1
        center = Point(x=float(box.center[0]), y=float(box.center[1]), z=float(box.center[2]))
        bbox = BoundingBox3D()
        bbox.center.position = center
        bbox.center.orientation = Quaternion(w=1.0)
        bbox.size = Vector3(x=float(box.size[0]), y=float(box.size[1]), z=float(box.size[2]))
        hypothesis = _hypothesis(class_id_text(result, index, class_id_format), result.scores[index])
        hypothesis.pose.pose.position = center
        hypothesis.pose.pose.orientation = Quaternion(w=1.0)
        detections.append(Detection3D(header=header, results=[hypothesis], bbox=bbox,
                                      id=str(box.instance_id)))
    array.detections = detections
    return array


def overlay_image(overlay_rgb: np.ndarray, header: Header) -> Image:
    return numpy_to_image_msg(overlay_rgb, "rgb8", header=header, msg=Image())
