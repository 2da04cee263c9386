"""Fixtures for the node tests: isolated DDS traffic, a probe node in this process, the perception
node in a child process (real rclpy + Fast DDS on loopback), and a tiny random-weight checkpoint."""
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

# Isolation before anything creates a DDS participant (the root conftest may already have done it).
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", str(random.Random(os.getpid()).randint(1, 200)))
os.environ.setdefault("ROS_LOG_DIR", tempfile.mkdtemp(prefix="semseg_ros_test_log_"))

import semseg_ros  # noqa: E402  (sets the DDS profile / AMENT_PREFIX_PATH for this process)
import rclpy  # noqa: E402
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from semseg_ros.image_codec import numpy_to_image_msg  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
TINY_CONFIG = REPO / "config" / "models" / "Synthetic" / "semseg_tiny.yaml"
START_TIMEOUT_S = 120.0   # model load + DDS discovery on 2 shared cores
RELIABLE = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)


PROBE_ERRORS = []  # what the probe's executor raised: a wait that times out names them


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            errors = f" (the probe's executor raised: {'; '.join(PROBE_ERRORS[-3:])})" if PROBE_ERRORS else ""
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{errors}")
        time.sleep(0.01)


def call_service(client, request, timeout=30.0, attempts=3):
    """The service's answer to ``request``, asked up to ``attempts`` times: the first request after
    wait_for_service can go unanswered while the server's reply writer is still matching this client's reader
    (a discovery race seen on 2 cores). Only for requests that are safe to repeat (get/set parameters,
    get_state, a refused transition); a transition itself goes through a client primed by ``prime_lifecycle_client``
    and ``attempts=1``, since a retried transition would be refused after a lost reply of one that happened."""
    for attempt in range(attempts):
        future = client.call_async(request)
        try:
            wait_for(future.done, timeout, f"an answer from {client.srv_name}")
        except AssertionError:
            client.remove_pending_request(future)
            if attempt == attempts - 1:
                raise
            continue
        return future.result()


def prime_lifecycle_client(change_client, timeout=30.0):
    """Wait until ``change_client`` (a ChangeState client) gets answers, by asking for a transition that does
    not exist (refused, harmless), so that the real transitions that follow are not lost to the discovery race."""
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState
    response = call_service(change_client, ChangeState.Request(transition=Transition(label="no_such_transition")),
                            timeout=timeout)
    assert not response.success, "a transition that does not exist was accepted"


def publish_until_answered(publisher, msg, outputs, attempts=3, timeout=45):
    """Publish ``msg`` until an output with its header arrives in ``outputs`` (a Probe.collect list): the first
    frames may race the reliable match. True when answered; the caller asserts, with the node's log."""
    for _ in range(attempts):
        publisher.publish(msg)
        try:
            wait_for(lambda: any(m.header == msg.header for _, m in outputs), timeout, "the answer")
            return True
        except AssertionError:
            continue
    return False


class Probe:
    """A node in the test process that publishes inputs and collects outputs."""

    def __init__(self):
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("semseg_test_probe", context=self.context)
        self.executor = MultiThreadedExecutor(num_threads=2, context=self.context)
        self.executor.add_node(self.node)
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()
        self._lock = threading.Lock()

    def _spin(self):
        """spin_once in a loop, not spin(): spin() ends at the first exception, and a subscription a test destroys
        after the MultiThreadedExecutor picked it raises InvalidHandle there (ros2/rclpy#1206). Ended silently,
        the session-wide probe would stop receiving and every later test would time out."""
        while not self._halt.is_set() and self.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.1)
            except ExternalShutdownException:
                return
            except Exception as error:
                PROBE_ERRORS.append(f"{type(error).__name__}: {error}")

    def collect(self, msg_type, topic, qos=RELIABLE):
        """Subscribe and return (list of (receive_time, msg), subscription)."""
        received = []

        def callback(msg):
            with self._lock:
                received.append((time.monotonic(), msg))
        return received, self.node.create_subscription(msg_type, topic, callback, qos)

    def publisher(self, topic, msg_type=Image, qos=RELIABLE):
        return self.node.create_publisher(msg_type, topic, qos)

    def now(self):
        return self.node.get_clock().now().to_msg()

    def latest_diagnostics(self, received, node_name, timeout=10.0):
        """Key/value dict of the newest /diagnostics status of ``node_name`` (waits for one new)."""
        start = len(received)
        wait_for(lambda: any(node_name in s.name for _, m in received[start:] for s in m.status),
                 timeout, f"/diagnostics from {node_name}")
        for _, msg in reversed(received):
            for status in msg.status:
                if node_name in status.name:
                    return {kv.key: kv.value for kv in status.values}

    def close(self):
        self._halt.set()
        self.executor.shutdown(timeout_sec=5)
        self._thread.join(5)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


@pytest.fixture(scope="session")
def probe():
    probe = Probe()
    yield probe
    probe.close()


class NodeProcess:
    """perception_node (``python -m semseg_ros.node``) in a child process, stderr/stdout to a file."""

    def __init__(self, name, parameters, remappings=(), log_dir=None, command=None, env=None):
        self.name = name
        self.log_path = Path(log_dir or tempfile.mkdtemp()) / f"{name}.log"
        if command is None:
            command = [sys.executable, "-m", "semseg_ros.node", "--ros-args", "-r", f"__node:={name}"]
            for key, value in parameters.items():
                command += ["-p", f"{key}:={_ros_value(value)}"]
            for source, target in remappings:
                command += ["-r", f"{source}:={target}"]
        self.command = command
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT,
                                        cwd=str(REPO), env=None if env is None else {**os.environ, **env})

    def log(self):
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def rss_bytes(self):
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def wait_exit(self, timeout=60):
        try:
            return self.process.wait(timeout)
        finally:
            self._log.close()

    def stop(self, signum=signal.SIGINT, timeout=30):
        """Send ``signum`` and return the exit code (kills after ``timeout``)."""
        if self.process.poll() is None:
            self.process.send_signal(signum)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
                raise AssertionError(f"{self.name} ignored signal {signum}:\n{self.log()[-3000:]}")
        self._log.close()
        return self.process.returncode


def _ros_value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value if value else "''"
    return repr(value)


@pytest.fixture
def start_node(tmp_path):
    """Factory: start a perception node; every node it started is stopped at teardown."""
    started = []

    def start(name, parameters, remappings=(), command=None, env=None):
        node = NodeProcess(name, parameters, remappings, tmp_path, command, env)
        started.append(node)
        return node

    yield start
    for node in started:
        if node.process.poll() is None:
            node.stop(signal.SIGTERM)


def wait_until_subscribed(probe, publisher, node, timeout=START_TIMEOUT_S):
    """Wait until ``node`` subscribes to ``publisher``'s topic, failing early if it died."""
    def ready():
        if node.process.poll() is not None:
            raise AssertionError(f"{node.name} exited with {node.process.returncode}:\n"
                                 f"{node.log()[-4000:]}")
        return publisher.get_subscription_count() > 0
    wait_for(ready, timeout, f"{node.name} to subscribe to {publisher.topic_name}")


def test_image(width=160, height=120, seed=0):
    """A colour scene with a few flat shapes (RGB)."""
    rng = np.random.default_rng(seed)
    image = np.full((height, width, 3), 90, np.uint8)
    for _ in range(4):
        x0, y0 = rng.integers(0, width - 30), rng.integers(0, height - 30)
        w, h = rng.integers(15, 40, size=2)
        image[y0:y0 + h, x0:x0 + w] = rng.integers(0, 256, 3)
    return image


test_image.__test__ = False  # a helper, not a test


def image_msg(rgb, stamp, frame_id="camera_optical", encoding="rgb8"):
    msg = numpy_to_image_msg(np.ascontiguousarray(rgb), encoding)
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    return msg


__all__ = ["DiagnosticArray", "LATCHED", "RELIABLE", "image_msg", "test_image", "wait_for",
           "wait_until_subscribed", "TINY_CONFIG"]
