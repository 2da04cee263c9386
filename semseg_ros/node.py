"""PerceptionNode: a thin lifecycle node over ``semseg_core.Predictor``.

configure  -> validate parameters, load the model, create the (lifecycle) publishers, latch ~/label_info
activate   -> enable the publishers, start the inference worker, subscribe to the camera
deactivate -> unsubscribe, stop the worker, disable the publishers (the model stays loaded)
cleanup    -> free the model, destroy publishers
With ``autostart`` (default) the node configures and activates itself, so a plain start just runs.

Nothing a peer on the graph sends can stop it: every subscription, timer, parameter and lifecycle service path
catches what it does not expect, logs it (once per second per class of error, peer text escaped), counts it in
/diagnostics and goes on; the executor runs in a loop that survives a failing callback. The process exits 0 on
SIGINT/SIGTERM and non-zero when it stops for an error.
"""
import signal
import sys
import threading
import traceback
from dataclasses import dataclass

import numpy as np
import rclpy
import torch
from rcl_interfaces.msg import SetParametersResult
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_policy_name_from_kind
from rclpy.qos_overriding_options import QoSOverridingOptions
from rclpy.signals import SignalHandlerOptions

from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header
from vision_msgs.msg import Detection2DArray, Detection3DArray, LabelInfo

from semseg_core.data.transforms import resize_shortest_edge_size
from semseg_ros import messages, parameters
from semseg_ros.compat import (PublisherEventCallbacks, SubscriptionEventCallbacks,
                               add_pre_set_parameters_callback)
from semseg_ros.depth import CameraGeometryError, Intrinsics, instance_boxes_3d
from semseg_ros.diagnostics import NodeStats, RateLimiter, diagnostic_array, printable
from semseg_ros.image_codec import (COLOR_ENCODINGS, ImageDecodeError, depth_to_meters,
                                    image_msg_to_numpy)
from semseg_ros.model_loader import ModelLoadError, load_predictor
from semseg_ros.overlay import draw_overlay
from semseg_ros.stamp_sync import StampBuffer, stamp_to_ns
from semseg_ros.worker import FrameWorker

# Stamped messages kept per input stream for the approximate-time match (1 s of a 30 Hz camera).
SYNC_BUFFER = 30


@dataclass
class Frame:
    header: Header
    image: np.ndarray   # decoded view of the message data, colour order per ``encoding``
    encoding: str
    msg: Image          # kept alive: ``image`` may be a view of its buffer


class PerceptionNode(LifecycleNode):
    def __init__(self, node_name="perception_node", **kwargs):
        super().__init__(node_name, **kwargs)
        self.stats = NodeStats()
        self._log_limit = RateLimiter(period_s=1.0)
        # The validated parameters: an immutable snapshot, replaced whole by a successful set; a frame reads it
        # once (``params = self.params``) and so never sees half of a change.
        self.params = parameters.declare_all(self)  # ParameterError on a bad start value
        add_pre_set_parameters_callback(self, parameters.coerce_types)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._applied = {}  # values the running model/worker were made with (restart_pending in diagnostics)
        self.predictor = None
        self._model_input = None  # (INPUT.MIN_SIZE_TEST, INPUT.MAX_SIZE_TEST) of the loaded model
        self._worker = None
        self._outputs = {}
        self._inputs = []
        self._depth_buffer = StampBuffer(SYNC_BUFFER)
        self._info_buffer = StampBuffer(SYNC_BUFFER)
        self._state = "unconfigured"  # for /diagnostics only; publishing is gated by the lifecycle publishers
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diagnostics_timer = self.create_timer(
            self.params["diagnostics_period"], self._guarded("diagnostics", self._publish_diagnostics))
        self._guard_change_state_service()

    # ---- failures: caught, logged once per second per class, counted ------------------------------------
    def _log_limited(self, key, text, level="warning"):
        held_back = self._log_limit.admit(key)
        if held_back is None:
            return
        if held_back:
            text += f" [{held_back} more like this since the last such line]"
        getattr(self.get_logger(), level)(text)

    def _callback_failed(self, source, error):
        """An exception no handler expected: counted and logged (with where it came from), never re-raised."""
        self.stats.count("callback_errors")
        trace = printable(traceback.format_exc(), limit=4000, quote=False)
        self._log_limited(("callback", source, type(error).__name__),
                          f"{source} failed: {type(error).__name__}: {printable(str(error), 300, quote=False)}"
                          f" (the node goes on) {trace}", level="error")

    def _guarded(self, source, callback):
        def guarded(*args):
            try:
                return callback(*args)
            except Exception as error:
                self._callback_failed(source, error)
        return guarded

    def _guard_change_state_service(self):
        """rclpy's change_state raises (instead of answering False) for a transition *id* that is not valid in the
        current state; unguarded, the exception ends the executor. Answer False and log instead."""
        service = getattr(self, "_service_change_state", None)
        if service is None:
            return
        handler = service.callback

        def change_state(request, response):
            try:
                return handler(request, response)
            except Exception as error:
                transition = request.transition
                self.stats.count("lifecycle_refused")
                self._log_limited(("change_state", type(error).__name__),
                                  f"refused lifecycle transition id {transition.id} label "
                                  f"{printable(transition.label)} in state {self._state}: "
                                  f"{printable(str(error), 200, quote=False)}")
                response.success = False
                return response
        service.callback = change_state

    # ---- parameters --------------------------------------------------------------------------------------
    def _on_set_parameters(self, parameter_list):
        try:
            snapshot = parameters.updated(self.params, parameter_list)
        except parameters.ParameterError as error:
            return SetParametersResult(successful=False, reason=str(error))
        except Exception as error:
            self._callback_failed("set_parameters", error)
            return SetParametersResult(successful=False, reason=f"internal error: {error}")
        previous, self.params = self.params, snapshot
        try:
            self._parameters_changed(previous, snapshot)
        except Exception as error:  # the values are valid and set; only the follow-up failed
            self._callback_failed("set_parameters (applying)", error)
        return SetParametersResult(successful=True)

    def _publish_label_info(self, params):
        """The class map, latched; its threshold is known_score_threshold, so a change of that is re-published."""
        self._outputs["label_info"].publish(messages.label_info(
            self.predictor.class_names, Header(stamp=self.get_clock().now().to_msg()),
            params["known_score_threshold"]))

    def _parameters_changed(self, previous, snapshot):
        if (snapshot["known_score_threshold"] != previous["known_score_threshold"]
                and "label_info" in self._outputs and self.predictor is not None):
            self._publish_label_info(snapshot)
        if snapshot["diagnostics_period"] != previous["diagnostics_period"]:
            self.destroy_timer(self._diagnostics_timer)
            self._diagnostics_timer = self.create_timer(
                snapshot["diagnostics_period"], self._guarded("diagnostics", self._publish_diagnostics))
        for name in parameters.pending_restart(self._applied, snapshot):
            if previous[name] != snapshot[name]:
                when = "activate" if name in parameters.ACTIVATE_TIME else "configure"
                self.get_logger().info(f"parameter {name} = {snapshot[name]!r} takes effect at the next {when}; "
                                       f"until then the node runs with {self._applied[name]!r}")

    # ---- lifecycle -----------------------------------------------------------------------
    def on_configure(self, state):
        try:
            return self._configure(state)
        except Exception as error:
            self._callback_failed("configure", error)
            self._release_model()
            return TransitionCallbackReturn.FAILURE

    def _configure(self, state):
        params = self.params
        try:
            self.predictor = load_predictor(params)
        except ModelLoadError as error:
            self.get_logger().error(f"cannot load the model: {error}")
            return TransitionCallbackReturn.FAILURE
        self._model_input = (int(self.predictor.cfg.INPUT.MIN_SIZE_TEST), int(self.predictor.cfg.INPUT.MAX_SIZE_TEST))
        output_qos = parameters.qos_profile(params, "output_qos")
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        specs = {"detections": Detection2DArray, "instance_mask": Image, "debug_image": Image}
        if params["use_depth"]:
            specs["detections_3d"] = Detection3DArray
        # Lifecycle publishers: rclpy itself drops what they are given while the node is not active. Their QoS
        # starts from output_qos and is overridable per topic (qos_overrides./ns/node/detections.publisher.*).
        for name, msg_type in specs.items():
            self._outputs[name] = self.create_lifecycle_publisher(
                msg_type, f"~/{name}", output_qos, event_callbacks=self._publisher_events(f"~/{name}"),
                qos_overriding_options=QoSOverridingOptions.with_default_policies())
        # Metadata, latched at configure (while still inactive): a plain publisher.
        self._outputs["label_info"] = self.create_publisher(LabelInfo, "~/label_info", latched)
        self._publish_label_info(params)
        self._applied = dict(params)
        self._state = "inactive"
        self.get_logger().info(f"configured: {len(self.predictor.class_names)} known classes, "
                               f"device {params['device']}")
        return super().on_configure(state)

    def on_activate(self, state):
        try:
            result = super().on_activate(state)  # enables the lifecycle publishers first
            if result != TransitionCallbackReturn.SUCCESS:
                return result
            self._activate()
            return TransitionCallbackReturn.SUCCESS
        except Exception as error:
            self._callback_failed("activate", error)
            self._stop_inputs()
            super().on_deactivate(state)  # back to inactive: the publishers are disabled again
            return TransitionCallbackReturn.FAILURE

    def _activate(self):
        params = self.params
        self._worker = FrameWorker(self._process, every_frame=params["process_every_frame"],
                                   queue_size=params["queue_size"],
                                   on_error=self._on_worker_error,
                                   on_start=lambda: self._set_inference_threads(params["num_threads"])).start()
        input_qos = parameters.qos_profile(params, "image_qos")
        inputs = [(Image, "image", self._on_image)]
        if params["use_depth"]:
            inputs += [(Image, "depth", self._on_depth), (CameraInfo, "camera_info", self._on_camera_info)]
        for msg_type, topic, callback in inputs:
            self._inputs.append(self.create_subscription(
                msg_type, topic, self._guarded(f"{topic} subscription", callback), input_qos,
                event_callbacks=self._subscription_events(topic),
                qos_overriding_options=QoSOverridingOptions.with_default_policies()))
        for name in parameters.ACTIVATE_TIME:
            self._applied[name] = params[name]
        self._state = "active"
        mode = (f"every frame, queue of {self._worker.queue_size}" if self._worker.every_frame
                else "latest frame")
        self.get_logger().info(f"active: listening on {self.resolve_topic_name('image')} ({mode})")

    def on_deactivate(self, state):
        try:
            self._stop_inputs()
        except Exception as error:
            self._callback_failed("deactivate", error)
        self._state = "inactive"
        return super().on_deactivate(state)  # disables the lifecycle publishers

    def on_cleanup(self, state):
        try:
            self._release_model()
        except Exception as error:
            self._callback_failed("cleanup", error)
        self._state = "unconfigured"
        return super().on_cleanup(state)

    def on_shutdown(self, state):
        try:
            self._stop_inputs()
            self._release_model()
        except Exception as error:
            self._callback_failed("shutdown", error)
        self._state = "finalized"
        return super().on_shutdown(state)

    def on_error(self, state):
        """A transition callback failed (rclpy: ERROR): drop everything and go back to unconfigured."""
        self.get_logger().error(f"lifecycle error while {state.label}: releasing the model and the topics")
        try:
            self._stop_inputs()
            self._release_model()
        except Exception as error:
            self._callback_failed("error processing", error)
        self._state = "unconfigured"
        return super().on_error(state)

    def _stop_inputs(self):
        for subscription in self._inputs:
            self.destroy_subscription(subscription)
        self._inputs = []
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.stop()
            self.stats.count("dropped", worker.discarded_at_stop)
        self._depth_buffer.clear()
        self._info_buffer.clear()

    def _release_model(self):
        for name, publisher in self._outputs.items():
            if name == "label_info":
                self.destroy_publisher(publisher)
            else:
                self.destroy_lifecycle_publisher(publisher)
        self._outputs = {}
        self._applied = {}
        self._model_input = None
        self.predictor = None  # frees the weights; CUDA memory returns to torch's cache

    # ---- inputs (executor thread) ------------------------------------------------------------
    def _on_image(self, msg):
        """Every image is counted once as received and ends as exactly one of: processed, dropped, rejected,
        failed (the accounting /diagnostics reports)."""
        self.stats.count("received")
        self.stats.input_rate.tick()
        try:
            frame = self._decode(msg)
        except (ImageDecodeError, CameraGeometryError) as error:
            self._reject("image", msg, error)
            return
        except Exception as error:
            self.stats.count("failed")
            self._callback_failed("image decoding", error)
            return
        worker = self._worker
        if worker is None:  # a message taken while deactivating
            self.stats.count("dropped")
        elif not worker.submit(frame):
            self.stats.count("dropped")
            if worker.every_frame:
                self.stats.count("dropped_queue_full")
                self._log_limited(("image", "queue_full"),
                                  f"every-frame queue full ({worker.queue_size} frames): frame dropped and "
                                  f"counted; the publisher is faster than the model (raise queue_size or pace "
                                  f"the publisher)")

    def _decode(self, msg):
        array, encoding = image_msg_to_numpy(msg)
        if encoding not in COLOR_ENCODINGS:
            raise ImageDecodeError(f"encoding {printable(encoding)} is not a colour input; use one of "
                                   f"{', '.join(COLOR_ENCODINGS)}", "encoding")
        model_input = self._model_input
        if model_input is not None:
            height, width = array.shape[:2]
            new_height, new_width = resize_shortest_edge_size(height, width, *model_input)
            if min(new_height, new_width) < 1:
                raise ImageDecodeError(
                    f"image {width}x{height} is too narrow for the model: its input resize (shorter side "
                    f"{model_input[0]}, longer side at most {model_input[1]}) leaves {new_width}x{new_height} "
                    f"pixels", "model_size")
        return Frame(msg.header, array, encoding, msg)

    def _on_depth(self, msg):
        self._depth_buffer.add(stamp_to_ns(msg.header.stamp), msg)

    def _on_camera_info(self, msg):
        self._info_buffer.add(stamp_to_ns(msg.header.stamp), msg)

    def _reject(self, topic, msg, error, counter="rejected"):
        self.stats.count(counter)
        stamp = msg.header.stamp
        kind = getattr(error, "kind", type(error).__name__)
        self._log_limited((topic, kind), f"rejected {topic} frame (stamp {stamp.sec}.{stamp.nanosec:09d}, "
                                         f"frame_id {printable(msg.header.frame_id)}): "
                                         f"{printable(str(error), 300, quote=False)}")

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
        publishers["detections"].publish(messages.detection2d_array(result, header, params["class_id_format"]))
        publishers["instance_mask"].publish(messages.instance_mask_image(result.label_image, header))
        debug = publishers["debug_image"]
        if params["debug_image"] and debug.get_subscription_count() > 0:
            rgb = image[:, :, ::-1] if color == "bgr" else image
            debug.publish(messages.overlay_image(draw_overlay(rgb, result), header))
            self.stats.count("overlays")
        if "detections_3d" in publishers:
            self._publish_3d(result, header, publishers["detections_3d"], params)
        latency = (self.get_clock().now().nanoseconds - stamp_to_ns(header.stamp)) * 1e-9
        self.stats.count("processed")
        self.stats.processed_rate.tick()
        self.stats.record(latency, float(result.inference_time_s))

    def _publish_3d(self, result, header, publisher, params):
        """Depth and camera_info matched to the image by stamp (approximate time): each the message nearest the
        image's stamp within ``sync_tolerance`` (the slop). No match: no 3D output for this frame, counted as
        depth_unmatched; never the latest intrinsics in place of matching ones."""
        stamp_ns = stamp_to_ns(header.stamp)
        slop_ns = int(params["sync_tolerance"] * 1e9)
        depth_msg = self._depth_buffer.closest(stamp_ns, slop_ns)
        info_msg = self._info_buffer.closest(stamp_ns, slop_ns)
        if depth_msg is None or info_msg is None:
            self.stats.count("depth_unmatched")
            missing = " and ".join(name for name, msg in (("depth", depth_msg), ("camera_info", info_msg))
                                   if msg is None)
            self._log_limited(("3d", "unmatched"), f"no 3D output for stamp {header.stamp.sec}."
                                                   f"{header.stamp.nanosec:09d}: no {missing} within "
                                                   f"sync_tolerance {params['sync_tolerance']} s of it")
            return
        try:
            depth, encoding = image_msg_to_numpy(depth_msg)
            depth_m = depth_to_meters(depth, encoding)
            intrinsics = Intrinsics.from_camera_info(info_msg)
            boxes = instance_boxes_3d(result.label_image, depth_m, intrinsics,
                                      min_points=params["depth_min_points"])
        except ValueError as error:  # ImageDecodeError, CameraGeometryError
            self._reject("depth", depth_msg, error, counter="depth_rejected")
            return
        self.stats.count("depth_matched")
        publisher.publish(messages.detection3d_array(result, boxes, header, params["class_id_format"]))

    @staticmethod
    def _set_inference_threads(num_threads):
        # torch's intra-op thread count is per calling thread (OpenMP): set it where inference runs
        if num_threads > 0:
            torch.set_num_threads(num_threads)

    def _on_worker_error(self, error, trace):
        self.stats.count("failed")
        self._log_limited(("inference", type(error).__name__),
                          f"inference failed on a frame: {printable(str(error), 300, quote=False)}\n{trace}",
                          level="error")

    # ---- diagnostics and QoS events -------------------------------------------------------
    def _publish_diagnostics(self):
        params = self.params
        worker = self._worker
        every_frame = worker.every_frame if worker is not None else params["process_every_frame"]
        extra = {"mode": "every_frame" if every_frame else "latest_frame",
                 "queued": str(worker.pending() if worker else 0),
                 "queue_size": str(worker.queue_size if worker else params["queue_size"]),
                 "restart_pending": ", ".join(parameters.pending_restart(self._applied, params)),
                 "lifecycle_refused": str(self.stats.snapshot().get("lifecycle_refused", 0)),
                 "depth_rejected": str(self.stats.snapshot().get("depth_rejected", 0))}
        self._diagnostics_pub.publish(diagnostic_array(
            self.stats, self.get_clock().now().to_msg(), self.get_fully_qualified_name(),
            params["device"], self._state, extra))

    def _subscription_events(self, topic):
        def incompatible(event):
            self.get_logger().error(
                f"incompatible QoS on subscription '{self.resolve_topic_name(topic)}': a publisher "
                f"offers an incompatible {qos_policy_name_from_kind(event.last_policy_kind)} policy; no data "
                f"will flow from it. Set image_qos.reliability to match the publisher (or "
                f"qos_overrides.{self.resolve_topic_name(topic)}.subscription.reliability for this topic).")

        def lost(event):  # what the middleware reports as lost (best-effort gaps) before the node saw it
            if topic == "image":
                self.stats.count("lost_in_transport", int(event.total_count_change))
        return SubscriptionEventCallbacks(incompatible_qos=self._guarded("QoS event", incompatible),
                                          message_lost=self._guarded("QoS event", lost))

    def _publisher_events(self, topic):
        def incompatible(event):
            self.get_logger().error(
                f"incompatible QoS on publisher '{self.resolve_topic_name(topic)}': a subscriber "
                f"requests an incompatible {qos_policy_name_from_kind(event.last_policy_kind)} "
                f"policy; it will receive nothing. Adjust output_qos (or qos_overrides."
                f"{self.resolve_topic_name(topic)}.publisher.reliability) or the subscriber.")
        return PublisherEventCallbacks(incompatible_qos=self._guarded("QoS event", incompatible))


def main(argv=None):
    """Entry point ``perception_node``: run until SIGINT/SIGTERM and exit 0; 2 for a refused parameter, 1 if the
    model fails to load or the node stops for an error."""
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
        if node.trigger_activate() != TransitionCallbackReturn.SUCCESS:
            print("perception_node: activate failed (see the error above)", file=sys.stderr)
            node.destroy_node()
            rclpy.try_shutdown()
            return 1
    # One executor thread: rclpy's MultiThreadedExecutor delivered image callbacks 0-2.6 s late in the demo (p95
    # 1.4 s vs 97 ms single-threaded, measured). Inference runs in the worker thread and no callback waits for
    # it (every-frame mode drops and counts when its queue is full), so callbacks stay short.
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    halt = threading.Event()
    failure = []
    spinner = threading.Thread(target=_spin, args=(executor, node, halt, failure), name="executor", daemon=True)
    spinner.start()
    while not stop.wait(0.2) and spinner.is_alive():
        pass
    stopped_by_signal = stop.is_set()
    halt.set()
    spinner.join(5.0)
    if not stopped_by_signal:
        reason = failure[0] if failure else "the executor stopped"
        node.get_logger().error(f"stopping for an error: {reason}")
    else:
        node.get_logger().info("shutting down")
    # stop the worker before the executor so no publish races the teardown; a teardown step failing (the
    # context may be gone already) must not turn an error stop into a traceback or a clean stop into an error
    for step in (node._stop_inputs, lambda: executor.shutdown(timeout_sec=5.0), node.destroy_node):
        try:
            step()
        except Exception as error:
            print(f"perception_node: teardown: {type(error).__name__}: {error}", file=sys.stderr)
    rclpy.try_shutdown()
    return 0 if stopped_by_signal and not failure else 1


def _spin(executor, node, halt, failure):
    """The executor loop, robust to a failing callback: rclpy's spin() re-raises a callback's exception and ends.
    Returns when ``halt`` is set or the context shuts down; an error that ends it is put in ``failure``."""
    try:
        while not halt.is_set() and node.context.ok():
            try:
                executor.spin_once(timeout_sec=0.1)
            except ExternalShutdownException:
                break
            except Exception as error:  # a callback no guard caught (e.g. inside rclpy): count, log, go on
                node._callback_failed("executor", error)
    except BaseException as error:  # noqa: B902 - anything else ends the node, with a non-zero exit
        failure.append(f"{type(error).__name__}: {error}")
        raise
    if not halt.is_set():
        failure.append("the ROS context was shut down")


if __name__ == "__main__":
    sys.exit(main())
