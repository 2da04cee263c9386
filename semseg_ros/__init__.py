"""semseg_ros: ROS 2 perception node and tools around semseg_core (open-set instance segmentation).

Importing the package fills in the ROS runtime variables a pip-only install lacks (see semseg_ros.env);
import it before calling rclpy.init().
"""

from semseg_ros.env import configure as _configure_ros_environment

_configure_ros_environment()

__version__ = "0.1.0"
