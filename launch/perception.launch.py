"""Launch the semseg_ros perception node.

    ros2 launch semseg_ros perception.launch.py image_topic:=/camera/color/image_raw device:=cuda

A plain launch / launch_ros file. Where ``ros2 launch`` is not installed (pip-only machines) the same
file runs with ``semseg-launch perception.launch.py name:=value ...`` (semseg_ros/launch_runner.py).
Parameters come from ``params_file``; launch arguments left empty keep the params file's value.
"""
import os

import yaml
from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

# launch argument -> node parameter; an empty argument leaves the params file's value in place
PARAMETER_ARGUMENTS = {
    "weights": "Model checkpoint; empty = params file (default: the embedded tiny model).",
    "model_config": "Model config YAML; empty = params file / the config stored with the weights.",
    "device": "cpu, cuda or cuda:N; empty = params file (cpu).",
    "known_score_threshold": "Minimum known-class score; empty = params file.",
    "unknown_score_threshold": "Minimum unknown score; empty = params file.",
    "use_depth": "true: subscribe depth + camera_info, publish ~/detections_3d.",
    "process_every_frame": "true: every frame in order (bag evaluation); false: newest frame only.",
    "debug_image": "Publish ~/debug_image while someone subscribes.",
    "image_reliability": "best_effort or reliable for the camera subscriptions.",
}
_PARAMETER_NAMES = {"image_reliability": "image_qos.reliability"}


def _perception_node(context):
    def argument(name):
        return LaunchConfiguration(name).perform(context)

    overrides = {}
    for name in PARAMETER_ARGUMENTS:
        value = argument(name)
        if value != "":
            parsed = yaml.safe_load(value)  # "0.5" -> 0.5, "true" -> True, paths stay strings
            overrides[_PARAMETER_NAMES.get(name, name)] = parsed
    return [Node(
        package="semseg_ros",
        executable="perception_node",
        name=argument("node_name"),
        namespace=argument("namespace"),
        parameters=[argument("params_file"), overrides],
        remappings=[("image", argument("image_topic")),
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
                  for name, text in PARAMETER_ARGUMENTS.items()]
    return LaunchDescription(arguments + [OpaqueFunction(function=_perception_node)])
