"""Parameters of the running node over the real parameter services: validated when set, integers coerced for
doubles, changes that take effect (diagnostics_period) or are reported as waiting (process_every_frame), one
consistent snapshot per frame, and QoS overridable with rclpy's qos_overrides.* parameters."""
import signal
import threading

import pytest
from rcl_interfaces.msg import ParameterType
from rcl_interfaces.srv import GetParameters, SetParameters
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy

from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState
from vision_msgs.msg import Detection2DArray

from conftest import (TINY_CONFIG, NodeProcess, call_service, image_msg, prime_lifecycle_client, test_image, wait_for,
                      wait_until_subscribed)

pytestmark = pytest.mark.ros

NAME = "parameters_under_test"
OUT = f"/{NAME}"
IMAGE_TOPIC = "/param_test/image"


@pytest.fixture(scope="module")
def node(probe, tiny_weights, tmp_path_factory):
    process = NodeProcess(NAME, {
        "weights": tiny_weights, "model_config": str(TINY_CONFIG), "num_threads": 1,
        # integers for doubles, as `ros2 launch ... known_score_threshold:=1` sends them (issue 13, point 3)
        "known_score_threshold": 1, "unknown_score_threshold": 0,
        "diagnostics_period": 5.0,
        # the aliases say best effort in and reliable out; the qos_overrides parameters win
        "image_qos.reliability": "best_effort",
        f"qos_overrides.{IMAGE_TOPIC}.subscription.reliability": "reliable",
        f"qos_overrides.{OUT}/detections.publisher.reliability": "best_effort",
    }, remappings=[("image", IMAGE_TOPIC)], log_dir=tmp_path_factory.mktemp("params"),
        env={"CUDA_VISIBLE_DEVICES": ""})
    reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
    best_effort = QoSProfile(depth=50, reliability=ReliabilityPolicy.BEST_EFFORT)
    handles = dict(process=process, image=probe.publisher(IMAGE_TOPIC, qos=reliable))
    handles["detections"], _ = probe.collect(Detection2DArray, f"{OUT}/detections", best_effort)
    handles["diagnostics"], _ = probe.collect(DiagnosticArray, "/diagnostics", reliable)
    handles["set"] = probe.node.create_client(SetParameters, f"{OUT}/set_parameters")
    handles["get"] = probe.node.create_client(GetParameters, f"{OUT}/get_parameters")
    wait_until_subscribed(probe, handles["image"], process)
    assert handles["set"].wait_for_service(timeout_sec=30) and handles["get"].wait_for_service(timeout_sec=30)
    yield handles
    assert process.stop(signal.SIGINT) == 0, process.log()[-3000:]


def _call(client, request, attempts=3):
    return call_service(client, request, timeout=30, attempts=attempts)


def _set(node, name, value, type_=None):
    parameter = Parameter(name, type_, value) if type_ is not None else Parameter(name, value=value)
    return _call(node["set"], SetParameters.Request(parameters=[parameter.to_parameter_msg()])).results[0]


def _get(node, name):
    return _call(node["get"], GetParameters.Request(names=[name])).values[0]


def _status(probe, node):
    return probe.latest_diagnostics(node["diagnostics"], NAME, timeout=30)


def test_an_integer_for_a_double_is_coerced_at_start_and_when_set(node):
    for name, expected in (("known_score_threshold", 1.0), ("unknown_score_threshold", 0.0)):
        value = _get(node, name)
        assert (value.type, value.double_value) == (ParameterType.PARAMETER_DOUBLE, expected), value
    result = _set(node, "known_score_threshold", 0, Parameter.Type.INTEGER)
    assert result.successful, result.reason
    value = _get(node, "known_score_threshold")
    assert (value.type, value.double_value) == (ParameterType.PARAMETER_DOUBLE, 0.0), value


@pytest.mark.parametrize("name, value, reason", [
    ("device", "cuda:99", "'cuda:99' requested but"),
    ("device", "tpu", "not supported"),
    ("model_config", "/etc/passwd", "'/etc/passwd' is not a model config"),
    ("weights", "/nonexistent/model.pt", "file not found"),
    ("known_score_threshold", float("nan"), "known_score_threshold"),
    ("known_score_threshold", "0.5", "must be a double, got string"),
    ("queue_size", 0, "queue_size"),
    ("image_qos.reliability", "reliable", "read-only"),
])
def test_bad_values_are_refused_when_set_and_change_nothing(node, name, value, reason):
    before = _get(node, name)
    result = _set(node, name, value)
    assert not result.successful and reason in result.reason, result.reason
    assert _get(node, name) == before


def test_qos_overrides_win_over_the_aliases(probe, node):
    subscriptions = probe.node.get_subscriptions_info_by_topic(IMAGE_TOPIC)
    mine = [info for info in subscriptions if info.node_name == NAME]
    assert mine and mine[0].qos_profile.reliability == ReliabilityPolicy.RELIABLE
    publishers = probe.node.get_publishers_info_by_topic(f"{OUT}/detections")
    assert publishers and publishers[0].qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT
    value = _get(node, f"qos_overrides.{IMAGE_TOPIC}.subscription.reliability")
    assert value.string_value == "reliable"


def test_diagnostics_period_change_takes_effect(probe, node):
    def count_since(start):
        return sum(NAME in s.name for _, m in list(node["diagnostics"])[start:] for s in m.status)

    assert _set(node, "diagnostics_period", 0.2).successful
    start = len(node["diagnostics"])
    wait_for(lambda: count_since(start) >= 10, 30, "ten /diagnostics messages at the new period of 0.2 s")
    assert _set(node, "diagnostics_period", 60.0).successful
    start = len(node["diagnostics"])
    stamp = probe.now()
    node["image"].publish(image_msg(test_image(seed=1), stamp))  # proof of life without diagnostics
    wait_for(lambda: any(m.header.stamp == stamp for _, m in list(node["detections"])), 90, "detections")
    assert count_since(start) <= 1, "a 60 s period: at most one message (one may have been on its way)"
    assert _set(node, "diagnostics_period", 0.5).successful


def test_parameters_toggled_while_streaming_fail_no_frame(probe, node):
    """A frame reads one immutable snapshot: toggling the thresholds and the relabelling rule while frames are
    processed never mixes two settings within a frame (before: 14 of 116 frames failed)."""
    assert _set(node, "diagnostics_period", 0.5).successful
    failed_before = int(_status(probe, node)["frames_failed"])
    settings = [dict(unknown_distance_threshold=-1.0, known_score_threshold=0.0, unknown_score_threshold=0.0),
                dict(unknown_distance_threshold=0.3, known_score_threshold=0.9, unknown_score_threshold=0.9)]
    stop = threading.Event()
    toggles = [0]

    def toggle():
        while not stop.is_set():
            for name, value in settings[toggles[0] % 2].items():
                _set(node, name, value)
            toggles[0] += 1

    toggler = threading.Thread(target=toggle, daemon=True)
    toggler.start()
    try:
        for seed in range(40):
            stamp = probe.now()
            node["image"].publish(image_msg(test_image(seed=seed % 7), stamp))
            wait_for(lambda: any(m.header.stamp == stamp for _, m in list(node["detections"])), 90,
                     f"detections for frame {seed}")
    finally:
        stop.set()
        toggler.join(30)
    assert toggles[0] >= 10, "the parameters changed while frames were processed"
    status = _status(probe, node)
    assert int(status["frames_failed"]) == failed_before, node["process"].log()[-3000:]


def test_process_every_frame_change_is_reported_until_the_next_activate(probe, node):
    assert _set(node, "diagnostics_period", 0.3).successful
    assert _set(node, "process_every_frame", True).successful
    status = _status(probe, node)
    assert status["mode"] == "latest_frame" and status["restart_pending"] == "process_every_frame", status
    assert "process_every_frame = True takes effect at the next activate" in node["process"].log()
    change = probe.node.create_client(ChangeState, f"{OUT}/change_state")
    assert change.wait_for_service(timeout_sec=30)
    prime_lifecycle_client(change)
    for label in ("deactivate", "activate"):
        response = _call(change, ChangeState.Request(transition=Transition(label=label)), attempts=1)
        assert response.success, label
    wait_for(lambda: _status(probe, node)["mode"] == "every_frame", 30, "every-frame mode after activate")
    assert _status(probe, node)["restart_pending"] == ""
