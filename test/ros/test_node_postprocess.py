"""The node's post-processing parameters are PostprocessOptions' fields, and a run-time change of any of them works
both ways: the live node (real rclpy + Fast DDS, embedded model, child process) answers each frame exactly as the
offline Predictor does with the same options."""
import signal
import tempfile

import cv2
import numpy as np
import pytest
import torch
import yaml

from conftest import REPO, NodeProcess, call_service, image_msg, wait_for, wait_until_subscribed
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from sensor_msgs.msg import Image
from vision_msgs.msg import Detection2DArray

from semseg_core import Predictor
from semseg_core.data.synthetic import generate_dataset
from semseg_core.postprocess import PostprocessOptions
from semseg_ros.image_codec import image_msg_to_numpy
from semseg_ros.parameters import POSTPROCESS_NAMES, SPECS, ParameterError, postprocess_options, validate

NAME = "postprocess_under_test"
IMAGE_TOPIC = "/postprocess_test/image"
TIMEOUT = 120.0


def test_every_option_is_a_dynamic_parameter_with_the_yaml_value():
    assert set(POSTPROCESS_NAMES) == set(PostprocessOptions.field_names())
    values = yaml.safe_load((REPO / "config" / "perception.yaml").read_text())["/**"]["ros__parameters"]
    for name in POSTPROCESS_NAMES:
        spec = SPECS[name]
        assert spec.dynamic, name
        assert type(spec.default) is type(getattr(PostprocessOptions(), name)), name
        assert values[name] == spec.default, name
    options = postprocess_options({name: spec.default for name, spec in SPECS.items()})
    assert options.output == "instance_map", "the planner output is the node's default"
    with pytest.raises(ParameterError, match="parameter 'unknown_distance_threshold'.*-1"):
        validate("unknown_distance_threshold", -0.5)
    with pytest.raises(ParameterError, match="'output' = 'panoptic'; expected one of"):
        validate("output", "panoptic")


def _value(value):
    if isinstance(value, str):
        return ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=value)
    if isinstance(value, float):
        return ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=value)
    return ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=value)


@pytest.mark.ros
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_runtime_changes_work_both_ways(probe, tmp_path):
    torch.set_num_threads(1)  # as the node: identical float results
    generate_dataset(str(tmp_path / "scene"), 1, seed=2024, split="test", progress=False)
    rgb = cv2.imread(str(tmp_path / "scene" / "images" / "000001.png"))[:, :, ::-1].copy()
    predictor = Predictor()
    node = NodeProcess(NAME, {"image_qos.reliability": "reliable", "process_every_frame": True, "num_threads": 1},
                       remappings=[("image", IMAGE_TOPIC)], log_dir=tempfile.mkdtemp())
    try:
        publisher = probe.publisher(IMAGE_TOPIC)
        detections, _ = probe.collect(Detection2DArray, f"/{NAME}/detections")
        masks, _ = probe.collect(Image, f"/{NAME}/instance_mask")
        client = probe.node.create_client(SetParameters, f"/{NAME}/set_parameters")
        wait_until_subscribed(probe, publisher, node)
        wait_for(lambda: client.service_is_ready(), TIMEOUT, "the set_parameters service")
        current = {name: spec.default for name, spec in SPECS.items()}
        second = [2000]

        def answer(**changes):
            if changes:
                request = SetParameters.Request(parameters=[Parameter(name=k, value=_value(v))
                                                            for k, v in changes.items()])
                response = call_service(client, request, timeout=TIMEOUT)
                assert all(r.successful for r in response.results), response
                current.update(changes)
            second[0] += 1
            msg = image_msg(rgb, probe.now(), frame_id="cam")
            msg.header.stamp.sec = second[0]
            publisher.publish(msg)
            stamp = msg.header.stamp
            wait_for(lambda: any(m.header.stamp == stamp for _, m in list(detections))
                     and any(m.header.stamp == stamp for _, m in list(masks)), TIMEOUT, f"answer {second[0]}")
            det = next(m for _, m in list(detections) if m.header.stamp == stamp)
            label, _ = image_msg_to_numpy(next(m for _, m in list(masks) if m.header.stamp == stamp))
            offline = predictor(rgb, options=postprocess_options(current))
            assert len(det.detections) == len(offline), changes
            np.testing.assert_array_equal(label, offline.label_image)
            return offline

        planner = answer()  # the default: the instance map
        assert 0 < len(planner) and np.unique(planner.label_image).size == len(planner) + 1
        raw = answer(output="raw")
        assert len(raw) > len(planner) and raw.is_known.any()
        none_known = answer(unknown_distance_threshold=0.0)  # every distance > 0: all unknown
        assert len(none_known) > 0 and not none_known.is_known.any()
        back = answer(unknown_distance_threshold=-1.0)  # loosened again: the model's own known labels return
        assert back.class_names == raw.class_names
        np.testing.assert_array_equal(back.scores, raw.scores)
        again = answer(output="instance_map", known_min_probability=1.0)  # no object is that sure: all unknown
        assert not again.is_known.any()
        restored = answer(known_min_probability=SPECS["known_min_probability"].default)
        assert restored.class_names == planner.class_names
    finally:
        assert node.stop(signal.SIGINT) == 0, node.log()[-3000:]
