"""PerceptionNode: a thin lifecycle node over ``semseg_core.Predictor``.

configure  -> validate parameters, load the model, create publishers, latch ~/label_info
activate   -> start the inference worker, subscribe to the camera
deactivate -> unsubscribe, stop the worker (the model stays loaded)
cleanup    -> free the model, destroy publishers
With ``autostart`` (default) the node configures and activates itself, so a plain start just runs.
"""
import sys
import threading
import time
from dataclasses import dataclass

import numpy as np
import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_policy_name_from_kind
from rclpy.signals import SignalHandlerOptions

from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header
from vision_msgs.msg import Detection2DArray, Detection3DArray, LabelInfo

from semseg_ros import messages, parameters
from semseg_ros.compat import PublisherEventCallbacks, SubscriptionEventCallbacks
from semseg_ros.depth import Intrinsics, instance_boxes_3d
from semseg_ros.diagnostics import NodeStats, diagnostic_array
from semseg_ros.image_codec import (COLOR_ENCODINGS, ImageDecodeError, depth_to_meters,
                                    image_msg_to_numpy)
from semseg_ros.model_loader import ModelLoadError, load_predictor
from semseg_ros.overlay import draw_overlay
from semseg_ros.stamp_sync import StampBuffer, stamp_to_ns
from semseg_ros.worker import FrameWorker


@dataclass
class Frame:
    header: Header
    image: np.ndarray   # decoded view of the message data, colour order per ``encoding``
    encoding: str
    msg: Image          # kept alive: ``image`` may be a view of its buffer


class PerceptionNode(LifecycleNode):
    def __init__(self, node_name="perception_node", **kwargs):
        super().__init__(node_name, **kwargs)
        self.params = parameters.declare_all(self)  # ParameterError on a bad start value
        self.add_on_set_parameters_callback(parameters.on_set_callback(self.params))
        self.stats = NodeStats()
        self.predictor = None
        self._worker = None
        self._outputs = {}
        self._inputs = []
        self._depth_buffer = StampBuffer(30)
        self._info_buffer = StampBuffer(30)
        self._state = "unconfigured"
        self._last_reject = (None, 0.0)
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(self.params["diagnostics_period"], self._publish_diagnostics)

    # ---- lifecycle -----------------------------------------------------------------------
    def on_configure(self, state):
        try:
            self.predictor = load_predictor(self.params)
        except ModelLoadError as error:
            self.get_logger().error(f"cannot load the model: {error}")
            return TransitionCallbackReturn.FAILURE
        output_qos = parameters.qos_profile(self.params, "output_qos")
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        specs = {"detections": (Detection2DArray, output_qos),
                 "instance_mask": (Image, output_qos),
                 "debug_image": (Image, output_qos),
                 "label_info": (LabelInfo, latched)}
        if self.params["use_depth"]:
            specs["detections_3d"] = (Detection3DArray, output_qos)
        for name, (msg_type, qos) in specs.items():
            self._outputs[name] = self.create_publisher(
                msg_type, f"~/{name}", qos, event_callbacks=self._publisher_events(f"~/{name}"))
        self._outputs["label_info"].publish(messages.label_info(
            self.predictor.class_names, Header(stamp=self.get_clock().now().to_msg()),
            min(self.params["known_score_threshold"], self.params["unknown_score_threshold"])))
        self._state = "inactive"
        self.get_logger().info(f"configured: {len(self.predictor.class_names)} known classes, "
                               f"device {self.params['device']}")
        return super().on_configure(state)

    def on_activate(self, state):
        self._worker = FrameWorker(self._process, every_frame=self.params["process_every_frame"],
                                   queue_size=self.params["queue_size"],
                                   on_error=self._on_worker_error,
                                   on_start=self._set_inference_threads).start()
        input_qos = parameters.qos_profile(self.params, "image_qos")
        self._inputs.append(self.create_subscription(
            Image, "image", self._on_image, input_qos,
            event_callbacks=self._subscription_events("image")))
        if self.params["use_depth"]:
            self._inputs.append(self.create_subscription(
                Image, "depth", self._on_depth, input_qos,
                event_callbacks=self._subscription_events("depth")))
            self._inputs.append(self.create_subscription(
                CameraInfo, "camera_info", self._on_camera_info, input_qos,
                event_callbacks=self._subscription_events("camera_info")))
        self._state = "active"
        mode = "every frame" if self.params["process_every_frame"] else "latest frame"
        self.get_logger().info(f"active: listening on {self.resolve_topic_name('image')} ({mode})")
        return super().on_activate(state)

    def on_deactivate(self, state):
        self._stop_inputs()
        self._state = "inactive"
        return super().on_deactivate(state)

    def on_cleanup(self, state):
        self._release_model()
        self._state = "unconfigured"
        return super().on_cleanup(state)

    def on_shutdown(self, state):
        self._stop_inputs()
        self._release_model()
        self._state = "finalized"
        return super().on_shutdown(state)

    def _stop_inputs(self):
        for subscription in self._inputs:
            self.destroy_subscription(subscription)
        self._inputs = []
        if self._worker is not None:
            self._worker.stop()
            self._worker = None
        self._depth_buffer.clear()
        self._info_buffer.clear()

    def _release_model(self):
        for publisher in self._outputs.values():
            self.destroy_publisher(publisher)
        self._outputs = {}
        self.predictor = None  # frees the weights; CUDA memory returns to torch's cache

    # ---- inputs (executor threads) ----------------------------------------------------------
    def _on_image(self, msg):
        self.stats.count("received")
        self.stats.input_rate.tick()
        try:
            array, encoding = image_msg_to_numpy(msg)
            if encoding not in COLOR_ENCODINGS:
                raise ImageDecodeError(f"encoding {encoding!r} is not a colour input; use one of "
                                       f"{', '.join(COLOR_ENCODINGS)}")
        except ImageDecodeError as error:
            self._reject("image", msg, error)
            return
        worker = self._worker
        if worker is not None and not worker.submit(Frame(msg.header, array, encoding, msg)):
            self.stats.count("dropped")

    def _on_depth(self, msg):
        self._depth_buffer.add(stamp_to_ns(msg.header.stamp), msg)

    def _on_camera_info(self, msg):
        self._info_buffer.add(stamp_to_ns(msg.header.stamp), msg)

    def _reject(self, topic, msg, error):
        self.stats.count("rejected")
        now = time.monotonic()
        reason = str(error)
        last_reason, last_time = self._last_reject
        if reason != last_reason or now - last_time > 1.0:  # one line per reason per second
            stamp = msg.header.stamp
            self.get_logger().warning(
                f"rejected {topic} frame (stamp {stamp.sec}.{stamp.nanosec:09d}, frame_id "
                f"'{msg.header.frame_id}'): {reason}")
            self._last_reject = (reason, now)

    # ---- inference (worker thread) -----------------------------------------------------------
    def _process(self, frame):
        if frame.encoding in ("bgr8", "bgra8"):
            image, color = frame.image[:, :, :3], "bgr"
        elif frame.encoding == "rgba8":
            image, color = frame.image[:, :, :3], "rgb"
        elif frame.encoding == "mono8":
            image, color = np.repeat(frame.image[:, :, None], 3, axis=2), "rgb"
        else:
            image, color = frame.image, "rgb"
        params = self.params
        # Every test-time rule lives in the Predictor's post-processing; only the label image leaves the device.
        result = self.predictor(np.ascontiguousarray(image), color=color, masks=False,
                                options=parameters.postprocess_options(params))
        header = frame.header
        publishers = self._outputs
        publishers["detections"].publish(messages.detection2d_array(result, header))
        publishers["instance_mask"].publish(messages.instance_mask_image(result.label_image, header))
        debug = publishers["debug_image"]
        if params["debug_image"] and debug.get_subscription_count() > 0:
            rgb = image[:, :, ::-1] if color == "bgr" else image
            debug.publish(messages.overlay_image(draw_overlay(rgb, result), header))
            self.stats.count("overlays")
        if "detections_3d" in publishers:
            self._publish_3d(result, header, publishers["detections_3d"])
        latency = (self.get_clock().now().nanoseconds - stamp_to_ns(header.stamp)) * 1e-9
        self.stats.count("processed")
        self.stats.processed_rate.tick()
        self.stats.record(latency, float(result.inference_time_s))

    def _publish_3d(self, result, header, publisher):
        stamp_ns = stamp_to_ns(header.stamp)
        tolerance_ns = int(self.params["sync_tolerance"] * 1e9)
        depth_msg = self._depth_buffer.closest(stamp_ns, tolerance_ns)
        info_msg = self._info_buffer.closest(stamp_ns, tolerance_ns) or self._info_buffer.latest()
        if depth_msg is None or info_msg is None:
            self.stats.count("depth_unmatched")
            return
        try:
            depth, encoding = image_msg_to_numpy(depth_msg)
            depth_m = depth_to_meters(depth, encoding)
            intrinsics = Intrinsics.from_camera_info(info_msg)
        except ValueError as error:  # ImageDecodeError included
            self._reject("depth", depth_msg, error)
            return
        self.stats.count("depth_matched")
        boxes = instance_boxes_3d(result.label_image, depth_m, intrinsics,
                                  min_points=self.params["depth_min_points"])
        publisher.publish(messages.detection3d_array(result, boxes, header))

    def _set_inference_threads(self):
        # torch's intra-op thread count is per calling thread (OpenMP): set it where inference runs
        if self.params["num_threads"] > 0:
            import torch
            torch.set_num_threads(self.params["num_threads"])

    def _on_worker_error(self, error, trace):
        self.stats.count("failed")
        self.get_logger().error(f"inference failed on a frame: {error}\n{trace}")

    # ---- diagnostics and QoS events -------------------------------------------------------
    def _publish_diagnostics(self):
        worker = self._worker
        extra = {"mode": "every_frame" if self.params["process_every_frame"] else "latest_frame",
                 "queued": str(worker.pending() if worker else 0)}
        self._diagnostics_pub.publish(diagnostic_array(
            self.stats, self.get_clock().now().to_msg(), self.get_fully_qualified_name(),
            self.params["device"], self._state, extra))

    def _subscription_events(self, topic):
        def incompatible(event):
            self.get_logger().error(
                f"incompatible QoS on subscription '{self.resolve_topic_name(topic)}': a publisher "
                f"offers an incompatible {qos_policy_name_from_kind(event.last_policy_kind)} policy "
                f"(this node asks for {self.params['image_qos.reliability']}); no data will flow "
                f"from it. Set image_qos.reliability to match the publisher.")
        return SubscriptionEventCallbacks(incompatible_qos=incompatible)

    def _publisher_events(self, topic):
        def incompatible(event):
            self.get_logger().error(
                f"incompatible QoS on publisher '{self.resolve_topic_name(topic)}': a subscriber "
                f"requests an incompatible {qos_policy_name_from_kind(event.last_policy_kind)} "
                f"policy; it will receive nothing. Adjust output_qos or the subscriber.")
        return PublisherEventCallbacks(incompatible_qos=incompatible)


def main(argv=None):
    """Entry point ``perception_node``: run until SIGINT/SIGTERM, exit 0; 1 if the model fails."""
    import signal
    rclpy.init(args=argv, signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        node = PerceptionNode()
    except parameters.ParameterError as error:
        print(f"perception_node: refusing to start: {error}", file=sys.stderr)
        rclpy.try_shutdown()
        return 2
    if node.params["autostart"]:
        if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            print("perception_node: configure failed (see the error above)", file=sys.stderr)
            node.destroy_node()
            rclpy.try_shutdown()
            return 1
        node.trigger_activate()
    # One executor thread: rclpy's MultiThreadedExecutor delivered image callbacks 0-2.6 s late in the demo (p95
    # 1.4 s vs 97 ms single-threaded, measured). Inference runs in the worker thread, so callbacks stay short; only
    # every-frame back-pressure (a full queue) holds this thread, and then diagnostics and services wait too.
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spinner = threading.Thread(target=_spin, args=(executor,), name="executor", daemon=True)
    spinner.start()
    while not stop.wait(0.2) and spinner.is_alive():
        pass
    node.get_logger().info("shutting down")
    node._stop_inputs()  # stop the worker before the executor so no publish races the teardown
    executor.shutdown(timeout_sec=5.0)
    spinner.join(5.0)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


def _spin(executor):
    try:
        executor.spin()
    except ExternalShutdownException:
        pass


if __name__ == "__main__":
    sys.exit(main())
