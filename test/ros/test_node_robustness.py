"""Nothing on the ROS graph can stop the node (issue 17): a seeded, bounded fuzz of every malformed input class
plus random field mutations, the lifecycle services by transition id and by label, an executor loop that outlives
a callback's exception, and an exit code that tells an error stop from a clean one. Each part ends by asserting that the node is still up and answers a valid frame.

The fuzz prints its closing figures (messages per class, crashes, frames lost uncounted).
"""
import math
import random
import signal
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy

from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from sensor_msgs.msg import CameraInfo, Image
from vision_msgs.msg import Detection2DArray, Detection3DArray

from conftest import (TINY_CONFIG, NodeProcess, call_service, image_msg, prime_lifecycle_client, test_image, wait_for,
                      wait_until_subscribed)
from semseg_ros.image_codec import numpy_to_image_msg
from semseg_ros.node import PerceptionNode, _spin

pytestmark = [pytest.mark.ros, pytest.mark.slow]

NAME = "fuzz_under_test"
OUT = f"/{NAME}"
SEED = 17
DEEP = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)  # nothing lost between probe and node
WIDTH, HEIGHT = 64, 48
FORGED = "\n[ERROR] [0.000000000] [fuzz_under_test]: forged line"
# The tiny config resizes the shorter side to 256 with the longer side capped at 512 (semseg_tiny.yaml). For a
# 1 x W image that gives a height of 512 / W pixels, rounded half up: at least 1 pixel while W <= 1024.
THIN_LIMIT = 1024


@pytest.fixture(scope="module")
def node(probe, tiny_weights, tmp_path_factory):
    process = NodeProcess(NAME, {
        "weights": tiny_weights, "model_config": str(TINY_CONFIG), "num_threads": 1,
        "known_score_threshold": 0.0, "unknown_score_threshold": 0.0, "use_depth": True,
        "process_every_frame": True, "queue_size": 10000, "sync_tolerance": 0.001, "depth_min_points": 1,
        "image_qos.reliability": "reliable", "image_qos.depth": 1000, "diagnostics_period": 0.2,
    }, remappings=[("image", "/fuzz/image"), ("depth", "/fuzz/depth"), ("camera_info", "/fuzz/camera_info")],
        log_dir=tmp_path_factory.mktemp("fuzz"))
    handles = dict(process=process, image=probe.publisher("/fuzz/image", qos=DEEP),
                   depth=probe.publisher("/fuzz/depth", qos=DEEP),
                   info=probe.publisher("/fuzz/camera_info", CameraInfo, qos=DEEP))
    handles["detections"], _ = probe.collect(Detection2DArray, f"{OUT}/detections", DEEP)
    handles["detections_3d"], _ = probe.collect(Detection3DArray, f"{OUT}/detections_3d", DEEP)
    handles["diagnostics"], _ = probe.collect(DiagnosticArray, "/diagnostics", DEEP)
    for key in ("image", "depth", "info"):
        wait_until_subscribed(probe, handles[key], process)
    yield handles
    assert process.stop(signal.SIGINT) == 0, process.log()[-3000:]


class Stamps:
    """Unique, recognisable stamps (sec counts up from 5000)."""

    def __init__(self, probe):
        self._probe = probe
        self._sec = 5000

    def __call__(self):
        self._sec += 1
        stamp = self._probe.now()
        stamp.sec, stamp.nanosec = self._sec, 0
        return stamp


def _counters(probe, node):
    status = probe.latest_diagnostics(node["diagnostics"], NAME)
    return {key: int(value) for key, value in status.items() if value.lstrip("-").isdigit()}


def _settle(probe, node, received):
    """Wait until the node has taken ``received`` images and has nothing queued; its counters then."""
    def settled():
        if node["process"].process.poll() is not None:
            raise AssertionError(f"the node exited with {node['process'].process.returncode}:\n"
                                 f"{node['process'].log()[-4000:]}")
        counters = _counters(probe, node)
        return counters if counters["frames_received"] >= received and counters["queued"] == 0 else None
    wait_for(settled, 240, f"the node to take {received} images and go idle")
    return settled()


def _answered(node, stamp, timeout=120):
    wait_for(lambda: any(m.header.stamp == stamp for _, m in list(node["detections"])), timeout,
             f"detections for stamp {stamp.sec}")


def _valid(stamp, seed=0, frame_id="fuzz_cam"):
    return image_msg(test_image(WIDTH, HEIGHT, seed=seed), stamp, frame_id=frame_id)


def _raw(stamp, encoding, height, width, step, data, frame_id="fuzz_cam"):
    msg = Image(encoding=encoding, height=height, width=width, step=step, data=data)
    msg.header.stamp, msg.header.frame_id = stamp, frame_id
    return msg


# ---- malformed image classes: each generator returns (message, expected outcome or None when unknown) -------
NON_ASCII_DIGITS = ["\u00b2", "\u00b3", "\u00b9", "\u2460", "\u2463", "\u0663", "\u0969", "\uff13", "\U0001d7d1",
                    "\u2074", "\u1041"]
GENERIC = ["8U", "8S", "16U", "16S", "32S", "32F", "64F"]


def encoding_long_digits(rng, stamp):
    digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(3, 6000)))
    return _raw(stamp, rng.choice(GENERIC) + "C" + digits, 2, 2, 24, bytes(48)), "rejected"


def encoding_non_ascii_digits(rng, stamp):
    body = "".join(rng.choice(NON_ASCII_DIGITS + ["1", "3"]) for _ in range(rng.randint(1, 3)))
    if body.isascii():
        body += rng.choice(NON_ASCII_DIGITS)
    return _raw(stamp, rng.choice(GENERIC) + "C" + body, 2, 2, 24, bytes(48)), "rejected"


def encoding_absurd_channels(rng, stamp):
    channels = rng.choice(["0", "5", "99", "512", "-1", "+3", " 3", "3\n", "", "C3", "00"])
    return _raw(stamp, rng.choice(GENERIC) + "C" + channels, 2, 2, 24, bytes(48)), "rejected"


def encoding_garbage(rng, stamp):
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789_\n\t\x1b\u00b2\u2460\u00e9\u4e2d"
    text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 300)))
    if text in ("rgb8", "bgr8", "rgba8", "bgra8", "mono8"):
        text += "x"
    return _raw(stamp, text, HEIGHT, WIDTH, WIDTH * 3, bytes(WIDTH * HEIGHT * 3), frame_id=FORGED), "rejected"


def geometry(rng, stamp):
    """Header fields that do not describe the data: the forged frame_id rides along into the reject log line."""
    height = rng.choice([0, 1, rng.randint(2, 70000), 2**32 - 1])
    width = rng.choice([0, 1, rng.randint(2, 70000), 2**32 - 1])
    step = rng.choice([0, width * 3 - 1 if width else 0, width * 3, rng.randint(0, 2**32 - 1)])
    needed = height * step
    size = rng.randint(0, 4096)
    if 0 < height <= 16384 and 0 < width <= 16384 and step >= width * 3 and size >= needed:
        size = needed - 1  # keep it malformed
    return _raw(stamp, "rgb8", height, width, step, bytes(max(size, 0)), frame_id=FORGED), "rejected"


def thin(rng, stamp):
    """1 pixel high or wide; processed while the model's resize leaves a pixel (hand-derived THIN_LIMIT)."""
    long = rng.choice([rng.randint(1, THIN_LIMIT), rng.randint(THIN_LIMIT + 1, 16384)])
    shape = (1, long, 3) if rng.random() < 0.5 else (long, 1, 3)
    msg = image_msg(np.full(shape, 90, np.uint8), stamp)
    return msg, "processed" if long <= THIN_LIMIT else "rejected"


def hostile_frame_id(rng, stamp):
    frame_id = rng.choice([FORGED, "x" * rng.randint(1000, 20000), "\x1b[2J\x1b[31mred", "cam\r\n\u2028\u00b2",
                           "".join(chr(rng.randint(1, 0xD7FF)) for _ in range(50))])
    return _valid(stamp, seed=rng.randint(0, 6), frame_id=frame_id), "processed"


def mutation(rng, stamp):
    """A valid image with 1-3 random field mutations (outcome not known in advance)."""
    msg = _valid(stamp, seed=rng.randint(0, 6))
    for _ in range(rng.randint(1, 3)):
        field = rng.choice(["height", "width", "step", "encoding", "is_bigendian", "data", "frame_id"])
        if field in ("height", "width", "step"):
            value = getattr(msg, field)
            setattr(msg, field, rng.choice([0, 1, value - 1, value + 1, value * 2, value // 2,
                                            rng.randint(0, 2**32 - 1)]) % 2**32)
        elif field == "encoding":
            msg.encoding = rng.choice(["mono8", "bgra8", "rgba8", "bgr8", "mono16", "16UC1", "32FC1", "8UC3",
                                       "64FC4", "yuv422", "8UC" + "9" * rng.randint(1, 50)])
        elif field == "is_bigendian":
            msg.is_bigendian = rng.randint(0, 255)
        elif field == "data":
            data = bytes(msg.data)
            msg.data = rng.choice([b"", data[:rng.randint(0, len(data))], data + bytes(rng.randint(1, 999))])
        else:
            msg.header.frame_id = "".join(chr(rng.randint(0, 0x2FFF) or 32) for _ in range(rng.randint(0, 99)))
    return msg, None


CLASSES = [(encoding_long_digits, 200), (encoding_non_ascii_digits, 200), (encoding_absurd_channels, 200),
           (encoding_garbage, 200), (geometry, 300), (thin, 200), (hostile_frame_id, 100), (mutation, 400)]


# ---- depth / camera_info cases: each arrives with an image of the same stamp, so it reaches the 3D arithmetic
K = [60.0, 0.0, 31.5, 0.0, 60.0, 23.5, 0.0, 0.0, 1.0]  # 64x48, about 56 degrees wide


def _info(stamp, k=K, width=WIDTH, height=HEIGHT):
    info = CameraInfo(width=width, height=height)
    info.k = [float(v) for v in k]
    info.header.stamp = stamp
    return info


def _depth(stamp, array, encoding):
    msg = numpy_to_image_msg(np.ascontiguousarray(array), encoding)
    msg.header.stamp = stamp
    return msg


def depth_cases(rng):
    metres = np.full((HEIGHT, WIDTH), 2.0, np.float32)
    millimetres = np.full((HEIGHT, WIDTH), 2000, np.uint16)
    bad_k = []
    for index in (0, 2, 4, 5, 8):
        for value in (math.nan, math.inf, -math.inf):
            k = list(K)
            k[index] = value
            bad_k.append(k)
    for fx in (1e-300, 1e300, 0.0, -60.0, 1e-3):
        bad_k.append([fx] + K[1:])
    cases = [("info", dict(k=k)) for k in bad_k]
    cases += [("info", dict(width=1, height=1)), ("info", dict(width=0, height=0)),
              ("info", dict(width=640, height=100)), ("info", dict(k=[60.0, 0, 500.0, 0, 60.0, 23.5, 0, 0, 1]))]
    cases += [("depth", (metres * 1000.0, "32FC1")),                     # millimetres in a metres image
              ("depth", ((millimetres // 1000).astype(np.uint16), "16UC1")),  # metres in a millimetres image
              ("depth", (np.full((1, 1), 2.0, np.float32), "32FC1")),     # 1x1 depth for a 64x48 image
              ("depth", (np.full((HEIGHT, 3 * WIDTH), 2.0, np.float32), "32FC1")),  # another view
              ("depth", (np.zeros((HEIGHT, WIDTH, 3), np.uint8), "rgb8")),  # not a depth encoding
              ("depth_raw", "16UC\u00b2"), ("depth_raw", "16UC" + "1" * 5000), ("depth_raw", "truncated")]
    rng.shuffle(cases)
    return cases, metres


def _send_depth_case(node, stamp, case, metres):
    kind, spec = case
    info, depth = _info(stamp), _depth(stamp, metres, "32FC1")
    if kind == "info":
        info = _info(stamp, **spec)
    elif kind == "depth":
        depth = _depth(stamp, *spec)
    elif spec == "truncated":
        depth.data = bytes(depth.data)[:100]
    else:
        depth.encoding = spec
    node["info"].publish(info)
    node["depth"].publish(depth)
    node["image"].publish(_valid(stamp, seed=1))


def test_fuzz_every_malformed_class_the_node_stays_up_and_counts_every_frame(probe, node):
    rng = random.Random(SEED)
    stamps = Stamps(probe)
    start = time.monotonic()
    sent = _settle(probe, node, 0)["frames_received"]
    figures = {}
    for generate, count in CLASSES:
        before = _settle(probe, node, sent)
        expected = {"rejected": 0, "processed": 0}
        unknown = 0
        for index in range(count):
            msg, outcome = generate(rng, stamps())
            node["image"].publish(msg)
            sent += 1
            if outcome is None:
                unknown += 1
            else:
                expected[outcome] += 1
            if index % 100 == 99:
                _settle(probe, node, sent)  # keep well inside every history depth on the way
        after = _settle(probe, node, sent)
        delta = {key: after[key] - before[key] for key in after if key in before}
        figures[generate.__name__] = count
        assert delta["frames_received"] == count, (generate.__name__, delta)
        assert delta["frames_failed"] == 0 and delta["callback_errors"] == 0, (generate.__name__, delta)
        assert delta["frames_dropped"] == 0, (generate.__name__, delta)
        if unknown == 0:
            assert delta["frames_rejected"] == expected["rejected"], (generate.__name__, expected, delta)
            assert delta["frames_processed"] == expected["processed"], (generate.__name__, expected, delta)
        else:
            assert delta["frames_rejected"] + delta["frames_processed"] == count, (generate.__name__, delta)

    # depth and camera_info that reach the 3D arithmetic: refused and counted, never a non-finite 3D output
    cases, metres = depth_cases(rng)
    depth_before = _counters(probe, node)
    bad_stamps = []
    for case in cases:
        stamp = stamps()
        bad_stamps.append(stamp)
        _send_depth_case(node, stamp, case, metres)
        sent += 1
        _answered(node, stamp)
    figures["depth_and_camera_info"] = len(cases)
    good = stamps()
    node["info"].publish(_info(good))
    node["depth"].publish(_depth(good, metres, "32FC1"))
    node["image"].publish(_valid(good, seed=1))
    sent += 1
    _answered(node, good)
    after = _settle(probe, node, sent)
    assert after["depth_rejected"] - depth_before["depth_rejected"] == len(cases), (cases, after)
    outputs_3d = [m for _, m in list(node["detections_3d"])]
    assert not [m for m in outputs_3d if m.header.stamp in bad_stamps], "3D output from refused depth/intrinsics"
    good_3d = [m for m in outputs_3d if m.header.stamp == good]
    assert len(good_3d) == 1, "the valid depth case after the fuzz gives its 3D output"
    for message in outputs_3d:
        for detection in message.detections:
            position, size = detection.bbox.center.position, detection.bbox.size
            assert all(math.isfinite(v) for v in (position.x, position.y, position.z, size.x, size.y, size.z))

    # the closing figures: nothing crashed, every image accounted for, the log stayed readable
    assert node["process"].process.poll() is None
    lost_uncounted = after["frames_received"] - (after["frames_processed"] + after["frames_dropped"] +
                                                 after["frames_rejected"] + after["frames_failed"])
    assert after["frames_received"] == sent and lost_uncounted == 0, after
    assert after["frames_failed"] == 0 and after["callback_errors"] == 0, after
    log = node["process"].log()
    assert not [line for line in log.splitlines() if line.startswith("[ERROR] [0.000000000]")], "forged log line"
    assert "\\n[ERROR] [0.000000000] [fuzz_under_test]: forged line" in log, "the forged frame_id, escaped"
    elapsed = time.monotonic() - start
    reject_lines = sum("rejected image frame" in line for line in log.splitlines())
    kinds = 8  # encoding, empty, too_large, layout, data, model_size, + slack for the depth path's kinds
    assert reject_lines <= kinds * (elapsed + 1), (reject_lines, elapsed)
    print(f"\nfuzz closing figures: messages per class {figures}; sent {sent}; crashes 0; frames lost uncounted "
          f"{lost_uncounted}; rejected {after['frames_rejected']}, processed {after['frames_processed']}, "
          f"depth refused {after['depth_rejected']}; {reject_lines} reject log lines in {elapsed:.0f} s")


def test_lifecycle_services_by_id_and_by_label_never_stop_the_node(probe, node):
    """change_state by an id invalid in the current state raised inside rclpy and ended the executor (exit 0);
    by label it was refused. Both are now answered False, and the node keeps serving."""
    change = probe.node.create_client(ChangeState, f"{OUT}/change_state")
    get = probe.node.create_client(GetState, f"{OUT}/get_state")
    assert change.wait_for_service(timeout_sec=60) and get.wait_for_service(timeout_sec=10)

    prime_lifecycle_client(change)

    def by_id(transition_id):
        return call_service(change, ChangeState.Request(transition=Transition(id=transition_id)), timeout=60,
                            attempts=1).success

    def by_label(label):
        return call_service(change, ChangeState.Request(transition=Transition(label=label)), timeout=60,
                            attempts=1).success

    def state():
        return call_service(get, GetState.Request()).current_state.label

    assert state() == "active"
    invalid_when_active = [Transition.TRANSITION_ACTIVATE, Transition.TRANSITION_CONFIGURE,
                           Transition.TRANSITION_CLEANUP, Transition.TRANSITION_UNCONFIGURED_SHUTDOWN,
                           Transition.TRANSITION_INACTIVE_SHUTDOWN, 99, 255]
    for transition_id in invalid_when_active:
        assert by_id(transition_id) is False, transition_id
        assert state() == "active"
    for label in ("activate", "configure", "cleanup", "no_such_transition", "\n[ERROR] forged"):
        assert by_label(label) is False, label
        assert state() == "active"
    # valid transitions still work, by id and by label
    assert by_id(Transition.TRANSITION_DEACTIVATE) and state() == "inactive"
    assert by_id(Transition.TRANSITION_DEACTIVATE) is False and state() == "inactive"
    assert by_label("activate") and state() == "active"
    wait_until_subscribed(probe, node["image"], node["process"])
    stamp = probe.now()
    node["image"].publish(_valid(stamp, seed=2))
    _answered(node, stamp)
    assert node["process"].process.poll() is None
    log = node["process"].log()
    assert "refused lifecycle transition id 3" in log  # 3 = activate, while active
    status = probe.latest_diagnostics(node["diagnostics"], NAME)
    assert int(status["lifecycle_refused"]) == len(invalid_when_active) + 1, status


EXIT_SCRIPT = textwrap.dedent("""
    import sys, threading, time
    import semseg_ros
    import rclpy
    from semseg_ros import node

    def pull_the_context():  # an error outside every callback: the ROS context goes away under the node
        while not any(thread.name == "executor" for thread in threading.enumerate()):
            time.sleep(0.05)
        time.sleep(0.5)
        rclpy.shutdown()

    threading.Thread(target=pull_the_context, daemon=True).start()
    sys.argv = ["perception_node", "--ros-args", "-r", "__node:=exit_code_test", "-p", "weights:=%s",
                "-p", "model_config:=%s"]
    sys.exit(node.main())
""")


def test_a_node_that_stops_for_an_error_exits_non_zero(start_node, tiny_weights, tmp_path):
    script = tmp_path / "pull_context.py"
    script.write_text(EXIT_SCRIPT % (tiny_weights, TINY_CONFIG))
    process = start_node("exit_code_test", {}, command=[sys.executable, str(script)])
    code = process.wait_exit(120)
    log = process.log()
    assert code == 1, log[-3000:]
    assert "stopping for an error: the ROS context was shut down" in log, log[-3000:]


def test_an_exception_no_callback_guard_caught_does_not_end_the_executor_loop():
    """rclpy's own spin() re-raises a callback's exception and ends; the node's loop counts it and goes on."""
    context = rclpy.Context()
    rclpy.init(context=context)
    node = executor = None
    try:
        node = PerceptionNode("spin_loop_node", context=context)
        ticks = []

        def failing():
            ticks.append(time.monotonic())
            raise RuntimeError("a callback nobody guarded")
        node.create_timer(0.05, failing)  # raw callback: nothing of the node wraps it
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        halt, failure = threading.Event(), []
        spinner = threading.Thread(target=_spin, args=(executor, node, halt, failure), daemon=True)
        spinner.start()
        wait_for(lambda: len(ticks) >= 5, 30, "the failing timer to fire five times")
        assert spinner.is_alive() and not failure
        assert node.stats.snapshot()["callback_errors"] >= 5
        halt.set()
        spinner.join(5)
        assert not spinner.is_alive() and not failure, "halted on request: not an error stop"
    finally:
        if executor is not None:
            executor.shutdown()
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown(context=context)
