"""The project's own vision_msgs: the v4.1 API, and the same RIHS01 type hashes as upstream."""

import importlib
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MSG_DIR = REPO / "interfaces" / "vision_msgs" / "msg"

# vision_msgs 4.1 (what Humble and Jazzy ship): field -> rosidl type, for every message.
V41_FIELDS = {
    "BoundingBox2D": {"center": "vision_msgs/Pose2D", "size_x": "double", "size_y": "double"},
    "BoundingBox2DArray": {"header": "std_msgs/Header", "boxes": "sequence<vision_msgs/BoundingBox2D>"},
    "BoundingBox3D": {"center": "geometry_msgs/Pose", "size": "geometry_msgs/Vector3"},
    "BoundingBox3DArray": {"header": "std_msgs/Header", "boxes": "sequence<vision_msgs/BoundingBox3D>"},
    "Classification": {"header": "std_msgs/Header", "results": "sequence<vision_msgs/ObjectHypothesis>"},
    "Detection2D": {"header": "std_msgs/Header", "results": "sequence<vision_msgs/ObjectHypothesisWithPose>",
                    "bbox": "vision_msgs/BoundingBox2D", "id": "string"},
    "Detection2DArray": {"header": "std_msgs/Header", "detections": "sequence<vision_msgs/Detection2D>"},
    "Detection3D": {"header": "std_msgs/Header", "results": "sequence<vision_msgs/ObjectHypothesisWithPose>",
                    "bbox": "vision_msgs/BoundingBox3D", "id": "string"},
    "Detection3DArray": {"header": "std_msgs/Header", "detections": "sequence<vision_msgs/Detection3D>"},
    "LabelInfo": {"header": "std_msgs/Header", "class_map": "sequence<vision_msgs/VisionClass>", "threshold": "float"},
    "ObjectHypothesis": {"class_id": "string", "score": "double"},
    "ObjectHypothesisWithPose": {"hypothesis": "vision_msgs/ObjectHypothesis", "pose": "geometry_msgs/PoseWithCovariance"},
    "Point2D": {"x": "double", "y": "double"},
    "Pose2D": {"position": "vision_msgs/Point2D", "theta": "double"},
    "VisionClass": {"class_id": "uint16", "class_name": "string"},
    "VisionInfo": {"header": "std_msgs/Header", "method": "string", "database_location": "string",
                   "database_version": "int32"},
}

# RIHS01 hashes of the v4.1 definitions (comments do not enter the hash), as computed by rosbags'
# independent implementation. Pinned so that an edit of a .msg file that changes the wire type fails here.
V41_HASHES = {
    "BoundingBox2D": "RIHS01_008eacbb0cf8f26e83795547bed013eec3675485ef386ec056d80eaaf1c1ce2f",
    "BoundingBox2DArray": "RIHS01_2464e82838009386d371b523211c21c91d74d313fcdd6788223c531d621cf691",
    "BoundingBox3D": "RIHS01_bbb73a65c163d7f9bb29009c7bde9f7faa576bd2d23299c4511d19230dab4698",
    "BoundingBox3DArray": "RIHS01_a81938db9576b10c2eecd7c5a5da3eac496efd00221b25ed051dfbc81fb56da6",
    "Classification": "RIHS01_f74db28d0eaef3afb78f48bf2161cd709a1383a0309d3454383b25be11345143",
    "Detection2D": "RIHS01_0d12b69df5c593b3455b7346fac8205437a7d4bcb09b9e0e0b2dde787ded38ea",
    "Detection2DArray": "RIHS01_214274120007f4a683866481336b70310268cfa107aebe9d594a6acf75bda968",
    "Detection3D": "RIHS01_ddd703be132ab0b69d33121f1bb034132bfbb3b0ac5f9fb1516005ba1c8a265b",
    "Detection3DArray": "RIHS01_793f5eab9595ac1c0da07873cc859db42eae51f0ee76056db8562515d830e018",
    "LabelInfo": "RIHS01_3d37df4015cdf660cc851c51897f2acd957e1ca6205ba0a99aebffb9406b0783",
    "ObjectHypothesis": "RIHS01_51da43cec11c01957a64d1e05a24acd18aae7745ec30b74348ad5f6d634f7f90",
    "ObjectHypothesisWithPose": "RIHS01_41c12344c0396c48b81df12467c192d99b2a0eb1463c5c37194e4223251c80bc",
    "Point2D": "RIHS01_eab0e83f44ab4de92ceaf76dd7d0e7638f2bdd1d16ffbe16c7a136c48e407247",
    "Pose2D": "RIHS01_b0b5d1d7b4c20dd4fcde3ed1d4b289a919290572007d67a97043814db25d3648",
    "VisionClass": "RIHS01_1e4a11f0fed50b5623cb8ff26ca0e37952a48a9c074d16f804b44e9164c2037a",
    "VisionInfo": "RIHS01_95d3116a17484ad91c9a2686e1d54890bbfc3ff6c6a2de137738c4950d45d284",
}


def test_the_message_set_is_exactly_vision_msgs_4_1():
    assert sorted(p.stem for p in MSG_DIR.glob("*.msg")) == sorted(V41_FIELDS)
    assert (MSG_DIR.parent / "COLCON_IGNORE").is_file(), "a ROS workspace must use the distro's vision_msgs"


@pytest.mark.parametrize("name", sorted(V41_FIELDS))
def test_built_message_has_the_v41_fields(name):
    cls = getattr(importlib.import_module("vision_msgs.msg"), name)
    assert cls.get_fields_and_field_types() == V41_FIELDS[name]
    cls()  # the C typesupport loads


def rosbags_hashes():
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_JAZZY)
    types = {}
    for path in MSG_DIR.glob("*.msg"):
        types.update(get_types_from_msg(path.read_text(), f"vision_msgs/msg/{path.stem}"))
    store.register(types)
    return {name: store.hash_rihs01(f"vision_msgs/msg/{name}") for name in V41_FIELDS}


def test_sources_hash_to_the_pinned_v41_hashes():
    assert rosbags_hashes() == V41_HASHES


def test_installed_type_descriptions_carry_the_v41_hashes():
    from ament_index_python.packages import get_package_share_directory

    share = Path(get_package_share_directory("vision_msgs"))
    installed = {}
    for name in V41_FIELDS:
        description = json.loads((share / "msg" / f"{name}.json").read_text())
        installed[name] = next(h["hash_string"] for h in description["type_hashes"]
                               if h["type_name"] == f"vision_msgs/msg/{name}")
    assert installed == V41_HASHES


@pytest.mark.ros
def test_the_hash_announced_on_the_ros_graph_is_the_v41_hash():
    import rclpy
    from vision_msgs.msg import Detection2DArray, LabelInfo

    context = rclpy.Context()
    rclpy.init(args=[], context=context)
    try:
        node = rclpy.create_node("vision_msgs_hash_probe", context=context)
        announced = {}
        for name, cls in (("Detection2DArray", Detection2DArray), ("LabelInfo", LabelInfo)):
            node.create_publisher(cls, f"hash_probe_{name}", 1)
            (info,) = node.get_publishers_info_by_topic(f"hash_probe_{name}")
            announced[name] = str(info.topic_type_hash)
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)
    assert announced == {k: V41_HASHES[k] for k in announced}
