"""Start-up errors, shutdown, and the launch file through the pip-only runner."""
import signal
import sys

import pytest

from vision_msgs.msg import Detection2DArray

from conftest import TINY_CONFIG, image_msg, test_image, wait_for, wait_until_subscribed


@pytest.mark.parametrize("parameters, exit_code, message", [
    ({"weights": "/nonexistent/model.pt"}, 2, "file not found: /nonexistent/model.pt"),
    ({"device": "cuda"}, 1, "CUDA is not available"),
    ({"known_score_threshold": 1.5}, 2, "known_score_threshold"),
    ({"image_qos.reliability": "sometimes"}, 2, "expected one of best_effort, reliable"),
])
def test_bad_start_parameters_fail_clearly(start_node, tiny_weights, parameters, exit_code,
                                           message):
    if "device" in parameters:
        import torch
        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
        parameters = dict(parameters, weights=tiny_weights, model_config=str(TINY_CONFIG))
    node = start_node("bad_start", parameters)
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
    command = [sys.executable, "-m", "semseg_ros.launch_runner", "perception.launch.py",
               "namespace:=launched", "image_topic:=/launch_test/image", f"weights:={tiny_weights}",
               f"model_config:={TINY_CONFIG}", "known_score_threshold:=0.0",
               "unknown_score_threshold:=0.0", "image_reliability:=reliable"]
    runner = start_node("launch_runner", {}, command=command)
    publisher = probe.publisher("/launch_test/image")
    detections, _ = probe.collect(Detection2DArray, "/launched/perception_node/detections")
    wait_until_subscribed(probe, publisher, runner)
    msg = image_msg(test_image(seed=4), probe.now(), frame_id="launch_cam")
    # resend until the output arrives: the first frames may race the reliable match
    for _ in range(3):
        publisher.publish(msg)
        try:
            wait_for(lambda: any(m.header == msg.header for _, m in detections), 45, "detections")
            break
        except AssertionError:
            continue
    assert any(m.header == msg.header for _, m in detections), runner.log()[-3000:]
    assert runner.stop(signal.SIGINT) == 0, runner.log()[-3000:]
    log = runner.log()
    assert "pip-only stand-ins" in log or "installed launch/launch_ros" in log
    assert "exited with code 0" in log
