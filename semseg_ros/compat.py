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
