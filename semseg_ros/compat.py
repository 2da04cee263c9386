"""The rclpy API differences between the ROS 2 distributions we support, each with its fallback.

Humble (rclpy 3.3, Python 3.10) and Jazzy (rclpy 7.1, Python 3.12; 3.11 wheels here). Import these names from
here, never from the distribution-specific module, so that one place says what differs.

- QoS event callbacks: ``rclpy.event_handler`` (Iron and later) / ``rclpy.qos_event`` (Humble).
"""
try:  # Iron, Jazzy and later
    from rclpy.event_handler import PublisherEventCallbacks, SubscriptionEventCallbacks
except ImportError:  # Humble
    from rclpy.qos_event import PublisherEventCallbacks, SubscriptionEventCallbacks

__all__ = ["PublisherEventCallbacks", "SubscriptionEventCallbacks"]


# ---- Parameter pre-set callbacks (rosnode) ------------------------------------------------------------------
# Iron and later run ``add_pre_set_parameters_callback`` callbacks before a set, and may change the values
# (the node coerces an integer given for a double there, so the stored value has the declared type). Humble has
# no such stage: there the node's snapshot holds the coerced double while ``ros2 param get`` shows the integer
# as given.
def add_pre_set_parameters_callback(node, callback):
    """Register ``callback`` (list of Parameter -> list of Parameter) where rclpy has the stage; True if so."""
    register = getattr(node, "add_pre_set_parameters_callback", None)
    if register is None:  # Humble
        return False
    register(callback)
    return True
