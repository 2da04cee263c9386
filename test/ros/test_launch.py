"""The launch file and the pip-only launcher (semseg-launch), and a quiet Ctrl-C during start-up.

Every run names this checkout's launch file and params file explicitly: the venv's ament share folder may
point at another checkout.
"""
import importlib.util
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vision_msgs.msg import Detection2DArray, LabelInfo

from conftest import (LATCHED, TINY_CONFIG, image_msg, publish_until_answered, test_image, wait_for,
                      wait_until_subscribed)
from semseg_ros.bag_tools import make_bag
from semseg_ros.launch_runner import _has_real, install_stand_ins
from semseg_ros.messages import class_map, class_name
from semseg_ros.parameters import SPECS

REPO = Path(__file__).resolve().parents[2]
LAUNCH_FILE = REPO / "launch" / "perception.launch.py"
PARAMS_FILE = REPO / "config" / "perception.yaml"
RUNNER = [sys.executable, "-m", "semseg_ros.launch_runner", str(LAUNCH_FILE)]


def _launch_module():
    if not (_has_real("launch", "LaunchService") and _has_real("launch_ros.actions", "Node")):
        install_stand_ins()  # what semseg-launch does where launch/launch_ros are not installed
    spec = importlib.util.spec_from_file_location("perception_launch", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _runner(*arguments, timeout=120):
    return subprocess.run(RUNNER + list(arguments), capture_output=True, text=True, timeout=timeout)


# ---- types of the launch arguments (point 3) ----------------------------------------------------------
def test_every_parameter_argument_has_the_node_parameters_type():
    module = _launch_module()
    for argument, (value_type, _) in module.PARAMETER_ARGUMENTS.items():
        parameter = module._PARAMETER_NAMES.get(argument, argument)
        assert value_type is type(SPECS[parameter].default), (argument, value_type, SPECS[parameter].default)


def test_arguments_are_converted_by_the_declared_type_not_by_yaml():
    typed = _launch_module().typed
    assert typed("known_score_threshold", "1", float) == 1.0
    assert type(typed("known_score_threshold", "1", float)) is float
    assert type(typed("unknown_score_threshold", "0", float)) is float
    assert typed("use_depth", "True", bool) is True and typed("use_depth", "false", bool) is False
    assert typed("weights", "1", str) == "1"  # a file named 1 stays a string
    with pytest.raises(ValueError, match=r"known_score_threshold:='abc' must be a number"):
        typed("known_score_threshold", "abc", float)
    with pytest.raises(ValueError, match="use_depth:='yes please' must be true or false"):
        typed("use_depth", "yes please", bool)


def test_the_printed_node_command_carries_doubles():
    run = _runner("-p", f"params_file:={PARAMS_FILE}", "known_score_threshold:=1", "unknown_score_threshold:=0",
                  "use_depth:=True", "weights:=1")
    assert run.returncode == 0, run.stderr
    assert "known_score_threshold: 1.0" in run.stdout and "unknown_score_threshold: 0.0" in run.stdout
    assert "use_depth: true" in run.stdout and "weights: '1'" in run.stdout


@pytest.mark.slow
def test_integer_text_for_a_double_runs_the_node_and_label_info_keeps_the_known_threshold(probe, start_node,
                                                                                         tiny_weights):
    """known_score_threshold:=1 reaches the node as the double 1.0 (it used to stop it with 'INTEGER,
    expecting DOUBLE'); LabelInfo.threshold is that known threshold, not min(known, unknown) = 0; every
    class_id decodes through LabelInfo (all unknown: no known score reaches 1.0)."""
    command = RUNNER + [f"params_file:={PARAMS_FILE}", "namespace:=typed", "image_topic:=/typed_launch/image",
                        f"weights:={tiny_weights}", f"model_config:={TINY_CONFIG}", "known_score_threshold:=1",
                        "unknown_score_threshold:=0", "image_reliability:=reliable"]
    runner = start_node("typed_launch", {}, command=command)
    publisher = probe.publisher("/typed_launch/image")
    detections, _ = probe.collect(Detection2DArray, "/typed/perception_node/detections")
    infos, _ = probe.collect(LabelInfo, "/typed/perception_node/label_info", LATCHED)
    wait_until_subscribed(probe, publisher, runner)
    msg = image_msg(test_image(seed=4), probe.now(), frame_id="typed_cam")
    assert publish_until_answered(publisher, msg, detections), runner.log()[-3000:]
    wait_for(lambda: infos, 30, "latched LabelInfo")
    assert runner.stop(signal.SIGINT) == 0, runner.log()[-3000:]
    info = infos[-1][1]
    assert info.threshold == pytest.approx(1.0)
    (answer,) = [m for _, m in detections if m.header == msg.header]
    ids = [d.results[0].hypothesis.class_id for d in answer.detections]
    assert ids and set(ids) == {"1000"}, ids
    assert {class_name(i, class_map(info)) for i in ids} == {"unknown"}


# ---- semseg-launch vs ros2 launch (point 7) -----------------------------------------------------------
@pytest.mark.parametrize("argument, message", [
    ("image_topic:=", "launch argument image_topic:= is empty"),
    ("node_name:=9lives", "launch argument node_name:='9lives' is not a valid ROS node name"),
    ("node_name:=my-node", "launch argument node_name:='my-node' is not a valid ROS node name"),
    ("known_score_threshold:=high", "launch argument known_score_threshold:='high' must be a number"),
    ("params_file:=/nonexistent/params.yaml", "params file not found: /nonexistent/params.yaml"),
])
def test_bad_launch_arguments_are_one_line_errors(argument, message):
    run = _runner(argument)
    assert run.returncode == 2, run.stdout + run.stderr
    assert f"semseg-launch: error: {message}" in run.stderr
    assert "Traceback" not in run.stderr and len(run.stderr.strip().splitlines()) == 1, run.stderr


def test_debug_shows_the_traceback_of_a_launch_error():
    run = _runner("-d", "image_topic:=")
    assert run.returncode == 2 and "Traceback" in run.stderr and "image_topic:= is empty" in run.stderr


def test_an_undeclared_argument_is_ignored_with_a_warning_as_ros2_launch_ignores_it():
    run = _runner("-p", f"params_file:={PARAMS_FILE}", "wieghts:=model.pt")
    assert run.returncode == 0, run.stderr
    assert "ignoring undeclared launch argument(s) wieghts" in run.stderr and "weights" in run.stderr
    assert "wieghts" not in run.stdout  # not passed to the node


def test_ros2_launch_options():
    shown = _runner("-s")
    assert shown.returncode == 0 and "image_topic:=/camera/color/image_raw" in shown.stdout
    prefixed = _runner("--print-description", "--launch-prefix", "nice -n 5", "-a", f"params_file:={PARAMS_FILE}")
    assert prefixed.returncode == 0, prefixed.stderr
    (command,) = [line for line in prefixed.stdout.splitlines() if not line.startswith("#")]
    assert command.startswith("nice -n 5 ") and "-r __node:=perception_node" in command
    unknown = _runner("--frobnicate")
    assert unknown.returncode == 2 and "unrecognized arguments: --frobnicate" in unknown.stderr


@pytest.mark.slow
def test_a_node_that_fails_to_start_gives_its_exit_code_and_says_ros2_launch_would_not():
    run = _runner(f"params_file:={PARAMS_FILE}", "weights:=/nonexistent/model.pt", timeout=240)
    assert run.returncode == 2, run.stdout[-2000:] + run.stderr[-2000:]
    assert "file not found: /nonexistent/model.pt" in run.stderr + run.stdout
    assert "exited with code 2 (ros2 launch would exit 0; semseg-launch passes the code on)" in run.stdout


# ---- defaults and start-up (point 6) ------------------------------------------------------------------
def test_make_bag_writes_where_the_launch_file_listens():
    shown = _runner("-s")
    defaults = dict(line.split()[0].split(":=", 1) for line in shown.stdout.splitlines() if ":=" in line)
    assert make_bag.DEFAULT_IMAGE_TOPIC == defaults["image_topic"] == "/camera/color/image_raw"
    assert make_bag.DEFAULT_CAMERA_INFO_TOPIC == defaults["camera_info_topic"] == "/camera/color/camera_info"


@pytest.mark.slow
def test_the_demo_replay_example_feeds_a_launched_node_as_written(probe, start_node, tiny_weights, tmp_path):
    """docs/DEMO.md: semseg-make-bag with its default topics, then semseg-replay --rate 1.0 into a node that
    the launch file started with its default topics."""
    from semseg_core.data.synthetic import generate_dataset

    coco = generate_dataset(str(tmp_path / "scenes"), 8, seed=5, image_size=96, progress=False)
    made = subprocess.run([sys.executable, "-m", "semseg_ros.bag_tools.make_bag", "--coco", coco, "--out",
                           str(tmp_path / "cam_bag"), "--rate", "10", "--storage", "mcap"],
                          capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr[-2000:]
    launched = start_node("demo_launch", {}, command=RUNNER + [
        f"params_file:={PARAMS_FILE}", f"weights:={tiny_weights}", "known_score_threshold:=0",
        "unknown_score_threshold:=0"])
    wait_until_subscribed(probe, probe.publisher("/camera/color/image_raw"), launched)
    replayed = subprocess.run([sys.executable, "-m", "semseg_ros.bag_tools.replay", "--bag", str(tmp_path / "cam_bag"),
                               "--out", str(tmp_path / "recording"), "--rate", "1.0", "--quiet"],
                              capture_output=True, text=True, timeout=240)
    assert launched.stop(signal.SIGINT) == 0, launched.log()[-3000:]
    summaries = [line for line in replayed.stdout.splitlines() if line.startswith("replayed ")]
    assert summaries and summaries[0].startswith("replayed 8 frames (timed)"), \
        replayed.stdout[-2000:] + replayed.stderr[-2000:]
    summary = summaries[0]
    answered = int(summary.split(": ")[1].split(" answered")[0])
    assert answered >= 1, summary  # latest-frame mode may drop frames under load; none answered = no match


@pytest.mark.slow
@pytest.mark.parametrize("delay_s", [0.3, 0.6, 1.0])
def test_ctrl_c_during_start_exits_0_without_a_traceback(delay_s, tmp_path):
    """SIGINT while the node is still importing rclpy / torch (the first 1-3 s of a start)."""
    # The child gets SIGINT's default disposition: a test run started in the background (`make test &`) ignores
    # SIGINT, the node keeps an ignored SIGINT on purpose (nohup), and it would then run on after the test.
    process = subprocess.Popen([sys.executable, "-m", "semseg_ros.node_main", "--ros-args", "-r",
                                "__node:=interrupted_node"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        time.sleep(delay_s)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, (process.returncode, err[-3000:])
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
