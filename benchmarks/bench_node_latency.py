"""What the ROS node adds on top of the model: stamp-to-publish latency vs bare Predictor time.

    .venv/bin/python benchmarks/bench_node_latency.py [--config CFG] [--weights W] [--frames 20]
    .venv/bin/python benchmarks/bench_node_latency.py --config config/models/Synthetic/semseg_tiny_fast.yaml \
        --weights semseg_core/assets/semseg_tiny_synthetic.pt --stream-seconds 10

Same frames (640x480 synthetic scenes) both ways, one after the other in one run:
1. the bare ``Predictor`` in this process, and, alternating frame by frame,
2. ``perception_node`` in a child process (latest-frame mode, reliable QoS, one frame in flight at a
   time so no queueing is measured and no frame is dropped): the node's own stamp-to-publish latency
   (its /diagnostics p50) and the round trip seen by a subscriber here (publish -> detections received).
3. then (--stream-seconds > 0) a camera stream at --stream-hz into the same node (latest-frame mode, as a
   robot runs it): output frames/s end to end and stamp-to-receipt latency of what comes out.
The last line is a JSON summary.
Without --weights a random-weight checkpoint of the config is written to a temp folder (timing does
not depend on the weights beyond the number of detections; node thresholds are 0 so every detection
the model returns is published, the node's worst case); --fixed-detections N makes a random model return
N instances per frame (a random R50 otherwise returns almost none).
"""
import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(100, 200)))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import semseg_ros  # noqa: E402,F401  (before rclpy: the ROS runtime variables and the DDS profile for 640x480 images)
import rclpy  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from vision_msgs.msg import Detection2DArray  # noqa: E402

from semseg_core import Predictor  # noqa: E402
from semseg_core.checkpoint import save_checkpoint  # noqa: E402
from semseg_core.config import load_config  # noqa: E402
from semseg_core.modeling import build_model  # noqa: E402
from semseg_ros.image_codec import numpy_to_image_msg  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_model_inference import identity_box_regressors  # noqa: E402
from common import emit, machine  # noqa: E402


def scenes(count, width=640, height=480):
    rng = np.random.default_rng(0)
    frames = []
    for _ in range(count):
        image = np.full((height, width, 3), rng.integers(40, 200), np.uint8)
        for _ in range(6):
            x0, y0 = rng.integers(0, width - 120), rng.integers(0, height - 120)
            w, h = rng.integers(30, 120, size=2)
            image[y0:y0 + h, x0:x0 + w] = rng.integers(0, 256, 3)
        frames.append(image)
    return frames


def random_checkpoint(config, folder, fixed_detections=0):
    """A random-weight checkpoint of `config`. With fixed_detections N, also a derived config (thresholds 0,
    N known detections) and identity box regressors, as in bench_model_inference.py's fixed mode, so that a
    random R50 returns N valid instances; returns (config, weights)."""
    if fixed_detections:
        derived = os.path.join(folder, "fixed_detections.yaml")
        with open(derived, "w") as f:
            f.write(f"_BASE_: {os.path.abspath(config)}\n"
                    "MODEL:\n  ROI_HEADS:\n    OBJ_SCORE_THRESH_TEST: 0.0\n"
                    f"  SOFTMAXCLS:\n    KNOWN_SCORE_THRESH: 0.0\n    UNKNOWN_SCORE_THRESH: 0.0\n"
                    f"    KNOWN_TOPK: {fixed_detections}\n  DML:\n    UNK_THR: 2.0\n"
                    f"TEST:\n  DETECTIONS_PER_IMAGE: {max(fixed_detections, 100)}\n")
        config = derived
    cfg = load_config(config, ["MODEL.DEVICE", "cpu"])  # built and saved on the CPU; the node picks its device
    torch.manual_seed(0)
    model = build_model(cfg)
    if fixed_detections:
        identity_box_regressors(model)
    path = os.path.join(folder, "random.pt")
    save_checkpoint(path, model, cfg, meta={"torch": str(torch.__version__)})
    return config, path


def bare_predictor(config, weights, threads, device="cpu"):
    torch.set_num_threads(threads)
    return Predictor(config=config, weights=weights, device=device)


def _timed_call(predictor, frame, threads, out):
    torch.set_num_threads(threads)  # per thread (OpenMP), as the node does in its worker
    start = time.perf_counter()
    result = predictor(frame)
    out["seconds"], out["detections"] = time.perf_counter() - start, len(result)


class NodeSession:
    """perception_node in a child process plus a probe node here: a reliable image publisher, the time each
    detections message arrives (by stamp) and the node's /diagnostics. A context manager; `params` are extra
    node parameters (name -> value). Waits until the node subscribes (its model is loaded by then)."""

    NAME = "bench_perception"

    def __init__(self, config, weights, threads=1, device="cpu", params=None, start_timeout=180.0):
        self.command = [sys.executable, "-m", "semseg_ros.node", "--ros-args", "-r", f"__node:={self.NAME}",
                        "-r", "image:=/bench/image", "-p", f"weights:={weights}", "-p", f"model_config:={config}",
                        "-p", "known_score_threshold:=0.0", "-p", "unknown_score_threshold:=0.0",
                        "-p", "process_every_frame:=false", "-p", "image_qos.reliability:=reliable",
                        "-p", f"num_threads:={threads}", "-p", "diagnostics_period:=0.5", "-p", f"device:={device}"]
        for name, value in (params or {}).items():
            self.command += ["-p", f"{name}:={value}"]
        self.start_timeout = start_timeout
        self.arrived, self.diagnostics = {}, []
        self.done = threading.Event()

    def __enter__(self):

        self.log = tempfile.TemporaryFile()
        self.process = subprocess.Popen(self.command, stdout=self.log, stderr=subprocess.STDOUT, cwd=str(REPO))
        rclpy.init()
        self.node = rclpy.create_node("bench_probe")
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.publisher = self.node.create_publisher(Image, "/bench/image", qos)

        def on_detections(m):
            self.arrived[(m.header.stamp.sec, m.header.stamp.nanosec)] = time.time()
            self.done.set()
        self.node.create_subscription(Detection2DArray, f"/{self.NAME}/detections", on_detections, qos)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics.append, 10)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        threading.Thread(target=self.executor.spin, daemon=True).start()
        try:
            deadline = time.monotonic() + self.start_timeout
            while self.publisher.get_subscription_count() == 0:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"node did not start:\n{self.node_log()}")
                time.sleep(0.05)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def node_log(self, tail=3000):
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-tail:]

    def send_and_wait(self, frame, timeout=120.0):
        """Publish one frame (stamped now) and wait for its detections; returns (sent time, round trip s)."""
        from semseg_ros.image_codec import numpy_to_image_msg
        msg = numpy_to_image_msg(frame, "rgb8")
        msg.header.frame_id = "bench"
        self.done.clear()
        sent = time.time()
        msg.header.stamp.sec, msg.header.stamp.nanosec = int(sent), int((sent % 1) * 1e9)
        self.publisher.publish(msg)
        key = (msg.header.stamp.sec, msg.header.stamp.nanosec)
        while key not in self.arrived:
            if not self.done.wait(timeout):
                raise RuntimeError(f"no output within {timeout} s; node log:\n{self.node_log()}")
            self.done.clear()
        return sent, self.arrived[key] - sent

    def node_diagnostics(self):
        """The latest key -> value pairs of the node's /diagnostics status."""
        return {kv.key: kv.value for m in self.diagnostics for s in m.status if self.NAME in s.name
                for kv in s.values}

    def __exit__(self, *exc):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown()
        return False


def interleaved_run(config, weights, frames, threads, stream_hz=30.0, stream_seconds=0.0, device="cpu"):
    """Per frame: the bare Predictor here, then the same frame through the node (alternating, so
    both see the same load on a shared machine)."""
    with NodeSession(config, weights, threads, device) as session:
        predictor = bare_predictor(config, weights, threads, device)
        round_trips, bare, counts = [], [], []
        for index, frame in enumerate([frames[0]] + frames):   # first frame: warm-up
            timed = {}
            worker = threading.Thread(target=_timed_call, args=(predictor, frame, threads, timed))
            worker.start()   # a fresh thread, like the node's inference worker
            worker.join()
            if index:
                bare.append(timed["seconds"])
                counts.append(timed["detections"])
            _, trip = session.send_and_wait(frame)
            if index:
                round_trips.append(trip)
        time.sleep(1.2)  # one more diagnostics period
        values = session.node_diagnostics()
        stream = (stream_run(session.publisher, session.arrived, frames, stream_hz, stream_seconds)
                  if stream_seconds > 0 else {})
    return np.array(bare), counts, np.array(round_trips), values, stream


def stream_run(publisher, arrived, frames, hz, seconds):
    """Publish frames at `hz` for `seconds` (a camera); the node keeps only the latest waiting frame.
    Returns output frames/s and stamp-to-receipt latencies of the frames that came out."""
    messages = []
    for frame in frames:
        msg = numpy_to_image_msg(frame, "rgb8")
        msg.header.frame_id = "bench"
        messages.append(msg)
    sent = {}
    start = time.monotonic()
    next_time, index = start, 0
    while time.monotonic() - start < seconds:
        msg = messages[index % len(messages)]
        now = time.time()
        msg.header.stamp.sec, msg.header.stamp.nanosec = int(now), int((now % 1) * 1e9)
        sent[(msg.header.stamp.sec, msg.header.stamp.nanosec)] = now
        publisher.publish(msg)
        index += 1
        next_time += 1.0 / hz
        time.sleep(max(0.0, next_time - time.monotonic()))
    time.sleep(2.0)  # let the frame in flight come out
    latencies = sorted(arrived[k] - t for k, t in sent.items() if k in arrived)
    received = [arrived[k] for k in sent if k in arrived]
    span = (max(received) - min(received)) if len(received) > 1 else float("nan")
    return {"input_hz": hz, "seconds": seconds, "published": len(sent), "processed": len(latencies),
            "output_fps": round((len(received) - 1) / span, 2) if len(received) > 1 else 0.0,
            "latency_p50_ms": round(float(np.median(latencies)) * 1e3, 1) if latencies else None,
            "latency_p95_ms": round(float(np.percentile(latencies, 95)) * 1e3, 1) if latencies else None,
            "latency_max_ms": round(float(latencies[-1]) * 1e3, 1) if latencies else None}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(REPO / "config/models/Synthetic/semseg_tiny.yaml"))
    parser.add_argument("--weights", default="")
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--stream-hz", type=float, default=30.0, help="camera rate of the stream phase")
    parser.add_argument("--stream-seconds", type=float, default=0.0, help="length of the stream phase (0: none)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (node and bare Predictor)")
    parser.add_argument("--fixed-detections", type=int, default=0,
                        help="random weights only: make the model return N detections per frame (0: its own)")
    parser.add_argument("--json-out", default=None)
    args = parser.parse_args(argv)
    frames = scenes(args.frames)
    with tempfile.TemporaryDirectory() as folder:
        config, weights = ((args.config, args.weights) if args.weights else
                           random_checkpoint(args.config, folder, args.fixed_detections))
        bare, counts, round_trips, diagnostics, stream = interleaved_run(
            config, weights, frames, args.threads, args.stream_hz, args.stream_seconds, args.device)
    bare_ms, trip_ms = np.median(bare) * 1e3, np.median(round_trips) * 1e3
    node_p50 = float(diagnostics.get("latency_p50_ms", "nan"))
    print(f"config: {Path(args.config).name}  frames: {len(frames)} x 640x480  threads: {args.threads}"
          f"  detections/frame: {np.mean(counts):.1f}")
    print(f"bare Predictor            median {bare_ms:8.1f} ms   p95 {np.percentile(bare, 95) * 1e3:8.1f} ms")
    print(f"node stamp->publish (p50) {node_p50:8.1f} ms   (node's /diagnostics, includes "
          f"its inference {diagnostics.get('inference_ms', 'nan')} ms)")
    print(f"probe publish->receive    median {trip_ms:8.1f} ms   p95 "
          f"{np.percentile(round_trips, 95) * 1e3:8.1f} ms")
    for label, value in (("node", node_p50), ("round trip", trip_ms)):
        print(f"overhead ({label}): {value - bare_ms:+.1f} ms, ratio {value / bare_ms:.3f}")
    if stream:
        print(f"stream {stream['input_hz']:.0f} Hz for {stream['seconds']:.0f} s: {stream['output_fps']} frames/s out, "
              f"latency p50 {stream['latency_p50_ms']} ms p95 {stream['latency_p95_ms']} ms "
              f"({stream['processed']}/{stream['published']} frames processed)")
    emit({"benchmark": "node_latency", "machine": machine(args.threads, args.device), "config": Path(args.config).name,
          "weights": Path(args.weights).name if args.weights else "random", "frames": len(frames),
          "detections_per_frame": round(float(np.mean(counts)), 1),
          "bare_predictor_ms": round(float(bare_ms), 1), "node_stamp_to_publish_p50_ms": round(node_p50, 1),
          "round_trip_ms": round(float(trip_ms), 1), "overhead_node_ms": round(node_p50 - bare_ms, 1),
          "overhead_round_trip_ms": round(float(trip_ms - bare_ms), 1),
          "sequential_fps_round_trip": round(1000.0 / trip_ms, 2), "stream": stream}, args.json_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
