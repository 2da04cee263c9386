"""Every rclpy / message API difference between the ROS 2 distributions we support, each with its fallback.

Humble (rclpy 3.3, Python 3.10) and Jazzy (rclpy 7.1, Python 3.12; 3.11 wheels here). Code in this package
imports these names from here, never from the distribution-specific module, so that one place says what
differs. ``test/ros/test_humble.py`` runs the node with the Iron/Jazzy-only modules hidden (Humble's view).

Differences we depend on, and the fallback taken on Humble:

- QoS event callbacks: ``rclpy.event_handler`` (Iron and later) / ``rclpy.qos_event`` (Humble; Jazzy still
  ships it, deprecated, so the new module is tried first).

Checked the same on Humble's rclpy 3.3 and Jazzy's 7.1, so used directly (no fallback needed):
``rclpy.init(signal_handler_options=...)``, ``rclpy.try_shutdown`` (3.2+) and ``rclpy.signals.SignalHandlerOptions`` (3.0+);
``rclpy.executors.ExternalShutdownException`` and ``Executor.shutdown(timeout_sec)``; ``rclpy.lifecycle``
(``LifecycleNode``, ``TransitionCallbackReturn``, ``trigger_configure`` / ``trigger_activate``,
``create_lifecycle_publisher``; 3.2+); ``Node.resolve_topic_name`` (1.3+); ``rclpy.qos.qos_policy_name_from_kind``
and the ``last_policy_kind`` of incompatible-QoS events; ``rclpy.qos_overriding_options.QoSOverridingOptions``;
``create_publisher`` / ``create_subscription`` with ``event_callbacks=``; ``rclpy.serialization``.
Messages: vision_msgs 4.x on both (``LabelInfo``, string ``ObjectHypothesis.class_id``, ``Pose2D`` with
``position``), sensor_msgs, lifecycle_msgs, diagnostic_msgs, rcl_interfaces: same fields.

Not used because Humble lacks them (the Humble test hides them): ``rclpy.wait_for_message``, ``rclpy.type_hash``,
``rclpy.service_introspection``, ``rclpy.logging_service``, ``rclpy.clock_type``, ``rclpy.parameter_client``,
``rclpy.init()`` as a context manager.
"""
try:  # Iron, Jazzy and later
    from rclpy.event_handler import PublisherEventCallbacks, SubscriptionEventCallbacks
    EVENT_CALLBACKS_MODULE = "rclpy.event_handler"
except ImportError:  # Humble
    from rclpy.qos_event import PublisherEventCallbacks, SubscriptionEventCallbacks
    EVENT_CALLBACKS_MODULE = "rclpy.qos_event"

__all__ = ["EVENT_CALLBACKS_MODULE", "PublisherEventCallbacks", "SubscriptionEventCallbacks",
           "add_pre_set_parameters_callback"]


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
