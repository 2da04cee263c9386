"""Launch the semseg_ros perception node.

    ros2 launch semseg_ros perception.launch.py image_topic:=/camera/color/image_raw device:=cuda

A plain launch / launch_ros file. Where ``ros2 launch`` is not installed (pip-only machines) the same
file runs with ``semseg-launch perception.launch.py name:=value ...`` (semseg_ros/launch_runner.py).
Parameters come from ``params_file``; launch arguments left empty keep the params file's value; a given
one is converted to the node parameter's type (``known_score_threshold:=1`` is the double 1.0).
"""
import os
import re

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

# launch argument -> (type of the node parameter, description); an empty argument leaves the params file's
# value in place. The types are the node's declared ones (semseg_ros/parameters.py SPECS; a test keeps them
# equal): written here because importing the node's parameter table would load torch into the launch process.
PARAMETER_ARGUMENTS = {
    "weights": (str, "Model checkpoint; empty = params file (default: the embedded tiny model)."),
    "model_config": (str, "Model config YAML; empty = params file / the config stored with the weights."),
    "device": (str, "cpu, cuda or cuda:N; empty = params file (cpu)."),
    "known_score_threshold": (float, "Minimum known-class score; empty = params file."),
    "unknown_score_threshold": (float, "Minimum unknown score; empty = params file."),
    "use_depth": (bool, "true: subscribe depth + camera_info, publish ~/detections_3d."),
    "process_every_frame": (bool, "true: every frame in order (bag evaluation); false: newest frame only."),
    "debug_image": (bool, "Publish ~/debug_image while someone subscribes."),
    "image_reliability": (str, "best_effort or reliable for the camera subscriptions."),
    "class_id_format": (str, "id: class_id = the decimal id ~/label_info maps (default); name: the class name."),
}
_PARAMETER_NAMES = {"image_reliability": "image_qos.reliability"}
_BOOLEANS = {"true": True, "false": False}
_NODE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def typed(name, text, value_type):
    """``text`` as ``value_type``, the way launch_ros' ParameterValue(value_type=...) coerces it: "1" for a
    double parameter is 1.0 (yaml would make it an integer, which the node refuses)."""
    try:
        if value_type is bool:
            return _BOOLEANS[text.strip().lower()]
        return value_type(text)
    except (KeyError, ValueError):
        kind = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[value_type]
        raise ValueError(f"launch argument {name}:={text!r} must be {kind}") from None


def _perception_node(context):
    def argument(name):
        return LaunchConfiguration(name).perform(context)

    node_name, image_topic = argument("node_name"), argument("image_topic")
    if not _NODE_NAME.fullmatch(node_name):
        raise ValueError(f"launch argument node_name:={node_name!r} is not a valid ROS node name (letters, "
                         f"digits and '_', not starting with a digit)")
    for topic in ("image_topic", "depth_topic", "camera_info_topic"):
        if not argument(topic).strip():
            raise ValueError(f"launch argument {topic}:= is empty; give a topic name such as "
                             f"/camera/color/image_raw")
    overrides = {}
    for name, (value_type, _) in PARAMETER_ARGUMENTS.items():
        value = argument(name)
        if value != "":
            overrides[_PARAMETER_NAMES.get(name, name)] = typed(name, value, value_type)
    return [Node(
        package="semseg_ros",
        executable="perception_node",
        name=node_name,
        namespace=argument("namespace"),
        parameters=[argument("params_file"), overrides],
        remappings=[("image", image_topic),
                    ("depth", argument("depth_topic")),
                    ("camera_info", argument("camera_info_topic"))],
        arguments=["--ros-args", "--log-level", argument("log_level")],
        output="screen",
    )]


def generate_launch_description():
    default_params = os.path.join(get_package_share_directory("semseg_ros"), "config",
                                  "perception.yaml")
    arguments = [
        DeclareLaunchArgument("namespace", default_value="", description="Node namespace."),
        DeclareLaunchArgument("node_name", default_value="perception_node",
                              description="Node name."),
        DeclareLaunchArgument("image_topic", default_value="/camera/color/image_raw",
                              description="Colour image (rgb8, bgr8, rgba8, bgra8, mono8)."),
        DeclareLaunchArgument("depth_topic", default_value="/camera/aligned_depth_to_color/image_raw",
                              description="Depth aligned with the colour image (16UC1 mm, 32FC1 m)."),
        DeclareLaunchArgument("camera_info_topic", default_value="/camera/color/camera_info",
                              description="CameraInfo of the depth image."),
        DeclareLaunchArgument("params_file", default_value=default_params,
                              description="Node parameters YAML."),
        DeclareLaunchArgument("log_level", default_value="info",
                              description="debug, info, warn, error."),
    ]
    arguments += [DeclareLaunchArgument(name, default_value="", description=text)
                  for name, (_, text) in PARAMETER_ARGUMENTS.items()]
    return LaunchDescription(arguments + [OpaqueFunction(function=_perception_node)])
