"""Start-up errors, shutdown, and the launch file through the pip-only runner."""
import signal
import sys

import pytest
import rclpy
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter

from vision_msgs.msg import Detection2DArray

from conftest import (REPO, TINY_CONFIG, call_service, image_msg, prime_lifecycle_client, publish_until_answered,
                      test_image, wait_for, wait_until_subscribed)
from semseg_ros.image_codec import image_msg_to_numpy
from semseg_ros.node import Frame, PerceptionNode


@pytest.mark.parametrize("parameters, exit_code, message", [
    ({"weights": "/nonexistent/model.pt"}, 2, "file not found: /nonexistent/model.pt"),
    ({"device": "cuda"}, 2, "CUDA is not available"),  # validated when set, at start too
    ({"known_score_threshold": 1.5}, 2, "known_score_threshold"),
    ({"image_qos.reliability": "sometimes"}, 2, "expected one of best_effort, reliable"),
    ({"model_config": str(TINY_CONFIG)}, 1, "Pass weights:=<checkpoint .pt/.pth>, or allow_random_weights:=true"),
])
def test_bad_start_parameters_fail_clearly(start_node, tiny_weights, parameters, exit_code,
                                           message):
    env = None
    if "device" in parameters:  # CUDA asked for where there is none: the GPU (if any) is hidden from the node
        parameters = dict(parameters, weights=tiny_weights, model_config=str(TINY_CONFIG))
        env = {"CUDA_VISIBLE_DEVICES": ""}
    node = start_node("bad_start", parameters, env=env)
    assert node.wait_exit(120) == exit_code
    assert message in node.log()


def test_sigterm_ends_an_idle_node_with_exit_code_0(probe, start_node, tiny_weights):
    node = start_node("idle_node", {"weights": tiny_weights, "model_config": str(TINY_CONFIG)},
                      remappings=[("image", "/idle/image")])
    publisher = probe.publisher("/idle/image")
    wait_until_subscribed(probe, publisher, node)
    assert node.stop(signal.SIGTERM) == 0
    assert "Traceback" not in node.log() and "terminate called" not in node.log()


def test_launch_file_through_semseg_launch(probe, start_node, tiny_weights):
    command = [sys.executable, "-m", "semseg_ros.launch_runner", str(REPO / "launch" / "perception.launch.py"),
               f"params_file:={REPO / 'config' / 'perception.yaml'}", "namespace:=launched", "image_topic:=/launch_test/image", f"weights:={tiny_weights}",
               f"model_config:={TINY_CONFIG}", "known_score_threshold:=0.0",
               "unknown_score_threshold:=0.0", "image_reliability:=reliable"]
    runner = start_node("launch_runner", {}, command=command)
    publisher = probe.publisher("/launch_test/image")
    detections, _ = probe.collect(Detection2DArray, "/launched/perception_node/detections")
    wait_until_subscribed(probe, publisher, runner)
    msg = image_msg(test_image(seed=4), probe.now(), frame_id="launch_cam")
    publish_until_answered(publisher, msg, detections)
    assert any(m.header == msg.header for _, m in detections), runner.log()[-3000:]
    assert runner.stop(signal.SIGINT) == 0, runner.log()[-3000:]
    log = runner.log()
    assert "pip-only stand-ins" in log or "installed launch/launch_ros" in log
    assert "exited with code 0" in log


def test_a_lifecycle_manager_drives_the_node(probe, start_node, tiny_weights):
    """autostart:=false: the node waits unconfigured; configure/activate/deactivate/cleanup over the real
    lifecycle services change what it does (no image subscription until active, none after deactivate)."""
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState, GetState

    name = "managed_node"
    topic = "/managed/image"
    node = start_node(name, {"weights": tiny_weights, "model_config": str(TINY_CONFIG), "autostart": False,
                             "known_score_threshold": 0.0, "unknown_score_threshold": 0.0,
                             "image_qos.reliability": "reliable"}, remappings=[("image", topic)])
    change = probe.node.create_client(ChangeState, f"/{name}/change_state")
    get = probe.node.create_client(GetState, f"/{name}/get_state")
    assert change.wait_for_service(timeout_sec=120) and get.wait_for_service(timeout_sec=10), node.log()[-2000:]

    prime_lifecycle_client(change)

    def state():
        return call_service(get, GetState.Request()).current_state.label

    def transition(transition_id):  # configure loads the model: up to 120 s on 2 shared cores
        return call_service(change, ChangeState.Request(transition=Transition(id=transition_id)), timeout=120,
                            attempts=1).success

    publisher = probe.publisher(topic)
    detections, _ = probe.collect(Detection2DArray, f"/{name}/detections")
    assert state() == "unconfigured"
    assert transition(Transition.TRANSITION_CONFIGURE) and state() == "inactive"
    assert publisher.get_subscription_count() == 0, "inactive: not listening to the camera yet"
    assert transition(Transition.TRANSITION_ACTIVATE) and state() == "active"
    wait_until_subscribed(probe, publisher, node)
    msg = image_msg(test_image(seed=5), probe.now(), frame_id="managed_cam")
    publisher.publish(msg)
    wait_for(lambda: any(m.header == msg.header for _, m in detections), 60, "detections while active")
    assert transition(Transition.TRANSITION_DEACTIVATE) and state() == "inactive"
    wait_for(lambda: publisher.get_subscription_count() == 0, 10, "the image subscription to go")
    assert transition(Transition.TRANSITION_CLEANUP) and state() == "unconfigured"
    assert node.stop(signal.SIGINT) == 0, node.log()[-3000:]


def test_incompatible_qos_is_reported_with_what_to_change(probe, start_node, tiny_weights):
    """A best-effort camera against a node that asks for reliable input: no data can flow, and the node's log says
    which topic, which policy and which parameter to set (and the same for an output subscriber asking too much)."""
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    name = "qos_node"
    node = start_node(name, {"weights": tiny_weights, "model_config": str(TINY_CONFIG),
                             "image_qos.reliability": "reliable", "output_qos.reliability": "best_effort"},
                      remappings=[("image", "/qos_test/image")])
    best_effort = QoSProfile(depth=2, reliability=ReliabilityPolicy.BEST_EFFORT)
    reliable = QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE)
    wait_for(lambda: "active: listening" in node.log() or node.process.poll() is not None, 120, "the node to start")
    probe.publisher("/qos_test/image", qos=best_effort)
    probe.collect(Detection2DArray, f"/{name}/detections", qos=reliable)
    wait_for(lambda: "incompatible QoS on subscription '/qos_test/image'" in node.log(), 30,
             f"the subscription's QoS error in the log:\n{node.log()[-2000:]}")
    wait_for(lambda: f"incompatible QoS on publisher '/{name}/detections'" in node.log(), 30,
             f"the publisher's QoS error in the log:\n{node.log()[-2000:]}")
    log = node.log()
    assert "RELIABILITY" in log and "Set image_qos.reliability to match the publisher" in log
    assert node.stop(signal.SIGINT) == 0, log[-3000:]


def test_outputs_are_lifecycle_publishers_silent_while_inactive(probe, tiny_weights):
    """Nothing is published while the node is inactive, by rclpy's lifecycle publishers (not a flag of ours): a
    frame processed while inactive reaches no subscriber, the next one after activate does."""
    name = "lifecycle_publisher_node"
    context = rclpy.Context()
    rclpy.init(context=context)
    node = None
    try:
        node = PerceptionNode(name, context=context, parameter_overrides=[
            Parameter("weights", value=tiny_weights), Parameter("model_config", value=str(TINY_CONFIG)),
            Parameter("known_score_threshold", value=0.0), Parameter("unknown_score_threshold", value=0.0),
            Parameter("autostart", value=False)])
        detections, _ = probe.collect(Detection2DArray, f"/{name}/detections")
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        publisher = node._outputs["detections"]
        wait_for(lambda: publisher.get_subscription_count() > 0, 30, "the probe to match ~/detections")

        def frame(stamp_sec):
            msg = image_msg(test_image(seed=stamp_sec % 7), probe.now())
            msg.header.stamp.sec = stamp_sec
            array, encoding = image_msg_to_numpy(msg)
            return Frame(msg.header, array, encoding, msg)

        node._process(frame(7001))            # inactive: the lifecycle publisher drops it
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        node._process(frame(7002))
        wait_for(lambda: any(m.header.stamp.sec == 7002 for _, m in list(detections)), 30, "the active frame")
        # one writer, reliable, in order: had 7001 been sent it would have arrived before 7002
        assert [m.header.stamp.sec for _, m in list(detections)] == [7002]
        assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
        node._process(frame(7003))
        node.trigger_activate()
        node._process(frame(7004))
        wait_for(lambda: any(m.header.stamp.sec == 7004 for _, m in list(detections)), 30, "the frame after")
        assert [m.header.stamp.sec for _, m in list(detections)] == [7002, 7004]
        node.trigger_deactivate()
        node.trigger_cleanup()
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown(context=context)
