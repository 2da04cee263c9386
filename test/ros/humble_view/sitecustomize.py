"""Humble's view of rclpy inside a Jazzy install: on PYTHONPATH, this makes the modules that Humble's
rclpy 3.3 lacks (semseg_ros.compat.NOT_IN_HUMBLE) fail to import, as they would on a Humble robot.

rclpy itself imports some of them while it loads, so rclpy is loaded first (with its deprecated
``rclpy.qos_event``, which Humble has), then those modules are dropped from ``sys.modules`` and a meta-path
finder refuses them from then on: code that imports them afterwards (ours) gets ModuleNotFoundError.
No Humble wheels exist on the package index, so this is how the Humble code paths run here.
"""
import importlib
import os
import sys
import warnings

# Listed in semseg_ros/compat.py's docstring; kept here because importing semseg_ros now would bind the
# compat names before the hiding.
HIDDEN = ("rclpy.event_handler", "rclpy.wait_for_message", "rclpy.type_hash", "rclpy.service_introspection",
          "rclpy.logging_service", "rclpy.clock_type", "rclpy.parameter_client",
          "rclpy.type_description_service")


class _NotInHumble:
    """Meta-path finder that refuses the Iron/Jazzy-only modules."""

    @staticmethod
    def find_spec(fullname, path=None, target=None):
        if fullname in HIDDEN:
            raise ModuleNotFoundError(f"No module named '{fullname}' (hidden: not in ROS 2 Humble)",
                                      name=fullname)
        return None


with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # Jazzy's qos_event warns that it is deprecated
    for _name in ("rclpy", "rclpy.node", "rclpy.lifecycle", "rclpy.executors", "rclpy.qos_event",
                  "rclpy.qos_overriding_options", "rclpy.publisher", "rclpy.subscription"):
        importlib.import_module(_name)
for _name in HIDDEN:
    sys.modules.pop(_name, None)
    _parent, _, _child = _name.rpartition(".")
    if hasattr(sys.modules.get(_parent), _child):
        delattr(sys.modules[_parent], _child)
sys.meta_path.insert(0, _NotInHumble)
os.environ["SEMSEG_HUMBLE_VIEW"] = "1"  # children (and the test) can see that the view was active
