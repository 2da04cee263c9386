"""Predictor Result -> ROS messages.

Id conventions (vision_msgs has a string class id in ObjectHypothesis and a uint16 in VisionClass):
- ``Detection2D.results[0].hypothesis.class_id`` is the class *name* (a known class name or ``unknown``),
  ``score`` its detection score.
- ``Detection2D.id`` is the instance's value in the ``~/instance_mask`` label image, as a decimal
  string ("1".."N"; 0 in the label image is background). The same id is used in ``~/detections_3d``.
- ``LabelInfo.class_map`` maps numeric class ids to names: the known classes keep the model's contiguous
  index 0..K-1, ``unknown`` has id 1000 (``semseg_core.constants.UNKNOWN_ID``). ``threshold`` is the
  node's minimum score.
"""
from geometry_msgs.msg import Point, Quaternion, Vector3
from sensor_msgs.msg import Image
from vision_msgs.msg import (BoundingBox2D, BoundingBox3D, Detection2D, Detection2DArray,
                             Detection3D, Detection3DArray, LabelInfo, ObjectHypothesisWithPose,
                             VisionClass)

from semseg_core.constants import UNKNOWN_ID, UNKNOWN_NAME
from semseg_ros.image_codec import numpy_to_image_msg


def _hypothesis(name, score):
    hypothesis = ObjectHypothesisWithPose()
    hypothesis.hypothesis.class_id = name
    hypothesis.hypothesis.score = float(score)
    return hypothesis


def detection2d_array(result, header):
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
        detections.append(Detection2D(header=header, results=[_hypothesis(result.class_names[i],
                                                                           result.scores[i])],
                                      bbox=bbox, id=str(i + 1)))
    array.detections = detections
    return array


def instance_mask_image(label_image, header):
    """The uint16 label image as a mono16 sensor_msgs/Image (native byte order)."""
    return numpy_to_image_msg(label_image, "mono16", header=header)


def label_info(class_names, header, threshold):
    """LabelInfo: known class index -> name, plus ``unknown`` at id 1000."""
    class_map = [VisionClass(class_id=i, class_name=name) for i, name in enumerate(class_names)]
    class_map.append(VisionClass(class_id=UNKNOWN_ID, class_name=UNKNOWN_NAME))
    return LabelInfo(header=header, class_map=class_map, threshold=float(threshold))


def detection3d_array(result, boxes_3d, header):
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
        hypothesis = _hypothesis(result.class_names[index], result.scores[index])
        hypothesis.pose.pose.position = center
        hypothesis.pose.pose.orientation = Quaternion(w=1.0)
        detections.append(Detection3D(header=header, results=[hypothesis], bbox=bbox,
                                      id=str(box.instance_id)))
    array.detections = detections
    return array


def overlay_image(overlay_rgb, header):
    return numpy_to_image_msg(overlay_rgb, "rgb8", header=header, msg=Image())
