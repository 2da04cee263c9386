"""The perception node in its own process, driven over real Fast DDS on loopback.

One node serves the tests of this module (a start costs a model load); each test uses its own
stamps and waits for exactly its outputs.
"""
import signal
import tempfile
import threading
import time

import numpy as np
import pytest

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from vision_msgs.msg import Detection2DArray, LabelInfo

from conftest import (LATCHED, TINY_CONFIG, NodeProcess, call_service, image_msg, test_image, wait_for,
                      wait_until_subscribed)
from semseg_ros.image_codec import image_msg_to_numpy

NAME = "perception_under_test"
IMAGE_TOPIC = "/node_test/image"
OUT = f"/{NAME}"
TIMEOUT = 90.0


@pytest.fixture(scope="module")
def node(probe, tiny_weights):
    process = NodeProcess(NAME, {
        "weights": tiny_weights, "model_config": str(TINY_CONFIG),
        "known_score_threshold": 0.0, "unknown_score_threshold": 0.0,
        "output": "raw",  # the random-weight model's masks are mostly empty: the instance map would list none
        "image_qos.reliability": "reliable", "image_qos.depth": 10,
        "process_every_frame": True, "diagnostics_period": 0.5, "num_threads": 1,
    }, remappings=[("image", IMAGE_TOPIC)], log_dir=tempfile.mkdtemp())
    publisher = probe.publisher(IMAGE_TOPIC)
    detections, _ = probe.collect(Detection2DArray, f"{OUT}/detections")
    masks, _ = probe.collect(Image, f"{OUT}/instance_mask")
    diagnostics, _ = probe.collect(DiagnosticArray, "/diagnostics")
    wait_until_subscribed(probe, publisher, process)
    yield dict(process=process, publisher=publisher, detections=detections, masks=masks,
               diagnostics=diagnostics)
    process.stop(signal.SIGINT)  # no assert here: test_node_exits_cleanly_on_sigint checks the exit code


_stamp_lock = threading.Lock()
_next_sec = [1000]


def _stamp(probe):
    with _stamp_lock:
        _next_sec[0] += 1
        stamp = probe.now()
        stamp.sec = _next_sec[0]  # unique, recognisable stamps per frame
        stamp.nanosec = 123456789
        return stamp


def _outputs_for(received, stamp, count=1):
    found = [m for _, m in list(received) if m.header.stamp == stamp]
    return found if len(found) >= count else None


def _send_and_wait(probe, node, msg):
    node["publisher"].publish(msg)
    stamp = msg.header.stamp
    wait_for(lambda: _outputs_for(node["detections"], stamp) and _outputs_for(node["masks"], stamp),
             TIMEOUT, f"outputs for stamp {stamp.sec}")
    return _outputs_for(node["detections"], stamp)[0], _outputs_for(node["masks"], stamp)[0]


def _detection_summary(array):
    return [(d.id, d.results[0].hypothesis.class_id, round(d.results[0].hypothesis.score, 5),
             round(d.bbox.center.position.x, 3), round(d.bbox.center.position.y, 3),
             round(d.bbox.size_x, 3), round(d.bbox.size_y, 3)) for d in array.detections]


def test_outputs_carry_the_input_header_and_label_ids_match(probe, node):
    for seed in range(2):
        msg = image_msg(test_image(seed=seed), _stamp(probe), frame_id=f"cam_{seed}")
        detections, mask = _send_and_wait(probe, node, msg)
        assert detections.header == msg.header and mask.header == msg.header
        assert all(d.header == msg.header for d in detections.detections)
        assert mask.encoding == "mono16" and (mask.width, mask.height) == (msg.width, msg.height)
        ids = [d.id for d in detections.detections]
        assert ids == [str(i) for i in range(1, len(ids) + 1)]
        label, _ = image_msg_to_numpy(mask)
        assert set(np.unique(label).tolist()) - {0} <= {int(i) for i in ids}
        assert len(ids) > 0, "thresholds are 0: the random-weight model should detect something"
    # exactly one output set per processed frame
    for stamp in {m.header.stamp.sec for _, m in node["detections"]}:
        assert sum(m.header.stamp.sec == stamp for _, m in node["detections"]) == 1


def test_label_info_reaches_a_late_subscriber(probe, node):
    infos, subscription = probe.collect(LabelInfo, f"{OUT}/label_info", LATCHED)
    wait_for(lambda: infos, 30, "latched LabelInfo")
    class_map = {c.class_id: c.class_name for c in infos[0][1].class_map}
    assert class_map[1000] == "unknown"
    assert [class_map[i] for i in range(6)] == ["box", "disc", "triangle", "ring", "star", "cross"]
    probe.node.destroy_subscription(subscription)


def _set_parameter(probe, name, value):
    """set_parameters over the node's real service; the answer must be successful."""
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters

    client = probe.node.create_client(SetParameters, f"{OUT}/set_parameters")
    try:
        assert client.wait_for_service(timeout_sec=30)
        request = SetParameters.Request(parameters=[Parameter(name=name, value=ParameterValue(
            type=ParameterType.PARAMETER_DOUBLE, double_value=value))])
        result = call_service(client, request).results[0]
        assert result.successful, result.reason
    finally:
        probe.node.destroy_client(client)


def test_label_info_threshold_follows_a_run_time_known_threshold_change(probe, node):
    """LabelInfo.threshold is known_score_threshold: a change at run time is re-published (latched)."""
    infos, subscription = probe.collect(LabelInfo, f"{OUT}/label_info", LATCHED)
    wait_for(lambda: infos, 30, "latched LabelInfo")
    assert infos[-1][1].threshold == pytest.approx(0.0)
    _set_parameter(probe, "known_score_threshold", 0.25)
    try:
        wait_for(lambda: infos[-1][1].threshold == pytest.approx(0.25), 30, "LabelInfo with threshold 0.25")
    finally:
        _set_parameter(probe, "known_score_threshold", 0.0)
        probe.node.destroy_subscription(subscription)


def test_class_ids_decode_through_label_info_and_names_on_request(probe, node):
    """vision_msgs' contract: each class_id is looked up in the latched LabelInfo; class_id_format:=name
    (set at run time) publishes the names the ids decode to."""
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters

    infos, subscription = probe.collect(LabelInfo, f"{OUT}/label_info", LATCHED)
    wait_for(lambda: infos, 30, "latched LabelInfo")
    names_by_id = {c.class_id: c.class_name for c in infos[0][1].class_map}
    probe.node.destroy_subscription(subscription)
    rgb = test_image(seed=7)
    by_id, _ = _send_and_wait(probe, node, image_msg(rgb, _stamp(probe)))
    ids = [d.results[0].hypothesis.class_id for d in by_id.detections]
    assert ids and all(i.isdigit() and int(i) in names_by_id for i in ids), (ids, names_by_id)

    client = probe.node.create_client(SetParameters, f"{OUT}/set_parameters")
    assert client.wait_for_service(timeout_sec=30)
    request = SetParameters.Request(parameters=[Parameter(name="class_id_format", value=ParameterValue(
        type=ParameterType.PARAMETER_STRING, string_value="name"))])
    result = call_service(client, request).results[0]
    assert result.successful, result.reason
    try:
        by_name, _ = _send_and_wait(probe, node, image_msg(rgb, _stamp(probe)))
        assert [d.results[0].hypothesis.class_id for d in by_name.detections] == [names_by_id[int(i)] for i in ids]
    finally:
        request.parameters[0].value.string_value = "id"
        call_service(client, request)
        probe.node.destroy_client(client)


def test_padded_bgra8_gives_the_same_detections_as_rgb8(probe, node):
    rgb = test_image(seed=5)
    reference, reference_mask = _send_and_wait(probe, node, image_msg(rgb, _stamp(probe)))
    bgra = np.concatenate([rgb[:, :, ::-1], np.full(rgb.shape[:2] + (1,), 255, np.uint8)], 2)
    padded = np.zeros((rgb.shape[0], rgb.shape[1] * 4 + 12), np.uint8)
    padded[:, :rgb.shape[1] * 4] = bgra.reshape(rgb.shape[0], -1)
    msg = Image(height=rgb.shape[0], width=rgb.shape[1], encoding="bgra8", step=padded.shape[1],
                data=padded.tobytes())
    msg.header.stamp = _stamp(probe)
    other, other_mask = _send_and_wait(probe, node, msg)
    assert _detection_summary(other) == _detection_summary(reference)
    np.testing.assert_array_equal(image_msg_to_numpy(other_mask)[0],
                                  image_msg_to_numpy(reference_mask)[0])


def _counter(probe, node, key):
    return int(probe.latest_diagnostics(node["diagnostics"], NAME)[key])


def test_malformed_frames_are_rejected_counted_and_the_node_goes_on(probe, node):
    rejected_before = _counter(probe, node, "frames_rejected")
    good = image_msg(test_image(seed=1), _stamp(probe))
    bad = []
    for change in (dict(encoding="yuv_unheard_of"), dict(data=bytes(10)), dict(height=0, width=0),
                   dict(height=1_000_000, width=1_000_000, step=3_000_000)):
        msg = image_msg(test_image(seed=1), _stamp(probe))
        for key, value in change.items():
            setattr(msg, key, value)
        bad.append(msg)
    for msg in bad:
        node["publisher"].publish(msg)
    _send_and_wait(probe, node, good)
    wait_for(lambda: _counter(probe, node, "frames_rejected") >= rejected_before + 4, 20,
             "four more rejected frames in /diagnostics")
    assert _counter(probe, node, "frames_rejected") == rejected_before + 4
    log = node["process"].log()
    for reason in ("unsupported image encoding", "needs height*step", "empty image",
                   "exceeds the limit"):
        assert reason in log, f"no log line for {reason!r}:\n{log[-2000:]}"
    assert node["process"].process.poll() is None


def test_debug_overlay_is_rendered_only_for_a_subscriber(probe, node):
    _send_and_wait(probe, node, image_msg(test_image(seed=2), _stamp(probe)))
    assert _counter(probe, node, "debug_images_rendered") == 0
    overlays, subscription = probe.collect(Image, f"{OUT}/debug_image")
    wait_for(lambda: subscription.get_publisher_count() > 0, 30, "debug_image connection")
    msg = image_msg(test_image(seed=3), _stamp(probe))
    _send_and_wait(probe, node, msg)
    wait_for(lambda: _outputs_for(overlays, msg.header.stamp), TIMEOUT, "the overlay")
    overlay = _outputs_for(overlays, msg.header.stamp)[0]
    assert overlay.encoding == "rgb8" and overlay.header == msg.header
    assert not np.array_equal(image_msg_to_numpy(overlay)[0], test_image(seed=3))
    assert _counter(probe, node, "debug_images_rendered") >= 1
    probe.node.destroy_subscription(subscription)


def test_every_frame_mode_processes_each_frame_in_order(probe, node):
    stamps = [_stamp(probe) for _ in range(8)]
    for stamp in stamps:                       # back to back, far faster than the model
        node["publisher"].publish(image_msg(test_image(seed=6), stamp))
    wait_for(lambda: all(_outputs_for(node["detections"], s) for s in stamps), TIMEOUT * 2,
             "an output for every frame")
    order = [m.header.stamp.sec for _, m in list(node["detections"])
             if m.header.stamp.sec in {s.sec for s in stamps}]
    assert order == [s.sec for s in stamps]
    diagnostics = probe.latest_diagnostics(node["diagnostics"], NAME)
    assert diagnostics["mode"] == "every_frame" and diagnostics["frames_dropped"] == "0"


def test_every_frame_queue_full_drops_are_counted_and_the_node_recovers(probe, tiny_weights, tmp_path):
    """A 50 Hz stream, far faster than the model, into a queue of two frames and a subscription history of 20
    (400 ms of stream, half the burst): the executor never waits for the model, so the history never overflows
    unseen (before, it waited while the queue was full and the history dropped frames that no counter saw; a
    shorter history also overflowed when the 2-core machine held the executor thread off for 200 ms). Every
    frame is taken; what the full queue refuses is counted, in frames_dropped and frames_dropped_queue_full;
    what is processed comes out in order."""
    name = "backpressure_under_test"
    topic = "/backpressure_test/image"
    frames = 40
    process = NodeProcess(name, {
        "weights": tiny_weights, "model_config": str(TINY_CONFIG), "num_threads": 1,
        "known_score_threshold": 0.0, "unknown_score_threshold": 0.0, "process_every_frame": True,
        "queue_size": 2, "image_qos.reliability": "reliable", "image_qos.depth": 20, "diagnostics_period": 0.5,
    }, remappings=[("image", topic)], log_dir=str(tmp_path))
    try:
        publisher = probe.publisher(topic, qos=QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
        detections, _ = probe.collect(Detection2DArray, f"/{name}/detections")
        diagnostics, _ = probe.collect(DiagnosticArray, "/diagnostics")
        wait_until_subscribed(probe, publisher, process)
        stamps = [_stamp(probe) for _ in range(frames)]
        for stamp in stamps:
            publisher.publish(image_msg(test_image(seed=3), stamp))
            time.sleep(0.02)

        last = {}

        def settled():
            last.update(probe.latest_diagnostics(diagnostics, name))
            return last["frames_received"] == str(frames) and last["queued"] == "0"
        try:
            wait_for(settled, TIMEOUT * 2, f"all {frames} frames taken and the queue empty")
        except AssertionError as error:
            raise AssertionError(f"{error}; the node's last status: {last}") from None
        status = dict(last)
        answered = [m.header.stamp.sec for _, m in list(detections) if m.header.stamp.sec in {s.sec for s in stamps}]
        assert answered == sorted(answered) and len(answered) == int(status["frames_processed"])
        dropped = int(status["frames_dropped"])
        assert dropped > 0 and dropped == int(status["frames_dropped_queue_full"]) == frames - len(answered)
        assert status["queue_size"] == "2" and "every-frame queue full (2 frames)" in process.log()
        # recovers: a frame sent alone is processed
        stamp = _stamp(probe)
        publisher.publish(image_msg(test_image(seed=4), stamp))
        wait_for(lambda: _outputs_for(detections, stamp), TIMEOUT, "the frame after the burst")
    finally:
        exit_code = process.stop(signal.SIGINT)  # always stopped; its exit code is checked only after a pass
    assert exit_code == 0, process.log()[-3000:]


def test_node_exits_cleanly_on_sigint(node):
    """After the work above, Ctrl-C ends the shared node with exit code 0. Keep this test last in the module: it
    stops the module's node (checked here rather than in the fixture's teardown, where a failing assert would be
    reported against whichever test ran last)."""
    assert node["process"].stop(signal.SIGINT) == 0, node["process"].log()[-3000:]
