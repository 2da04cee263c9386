"""Soak: the node's memory over a long stream with malformed frames and run-time parameter changes mixed in.

    .venv/bin/python benchmarks/bench_soak.py                       # 10 minutes (the figure the README quotes)
    nice -n 10 .venv/bin/python benchmarks/bench_soak.py --seconds 150 --json-out benchmarks/results/soak_cpu.json

``perception_node`` runs in a child process (latest-frame mode, best-effort input as from a camera) and gets
640x480 frames at --hz; every --malformed-every-th message is malformed (a rotating set of the classes of
issue 17: hostile encodings, inconsistent sizes, short data), and every --set-every-s seconds a threshold is
changed over the parameter service. The node's resident memory (VmRSS) is sampled every --sample-s seconds.
A sample taken mid-frame includes that frame's transient tensors (tens of MB up and down again), so the slope
is a least-squares line through the floor of the memory: the minimum of each --window-s window, after the first
--warmup-s seconds (allocator and caches settle), in MB per minute. The last line is a JSON summary, also with the node's frame counters at the end.
A leak of one 640x480 rgb8 frame per processed frame would show as ~55 MB/min at 1 frame/s.
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_node_latency import random_checkpoint, scenes  # noqa: E402
from common import emit, machine  # noqa: E402

NAME = "soak_perception"


def rss_mb(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError("no VmRSS")


def malformed(index, template):
    """The ``index``-th malformed message: a copy of ``template`` with one field broken, the class rotating. Sizes do
    not grow with ``index``: a first version whose encodings grew with it showed step-wise RSS growth that the
    same run with a fixed size did not (BENCHMARKS.md, soak)."""
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header
    msg = Image(header=Header(stamp=template.header.stamp), height=template.height, width=template.width,
                encoding=template.encoding, step=template.step, data=template.data)
    kind = index % 5
    if kind == 0:
        msg.encoding = "8UC" + "7" * 4000
    elif kind == 1:
        msg.encoding = "32FC\u2460"
    elif kind == 2:
        msg.height = template.height + 1 + index % 50
    elif kind == 3:
        msg.data = bytes(template.data)[: index % 1000]
    else:
        msg.step, msg.width = 7, template.width + index % 13
    msg.header.frame_id = f"soak\n{index}"
    return msg


def window_floor(samples, warmup_s, window_s):
    """(window centre, minimum RSS) per ``window_s`` window of the samples after ``warmup_s``."""
    floors = {}
    for t, value in samples:
        if t >= warmup_s:
            index = int((t - warmup_s) // window_s)
            floors[index] = min(value, floors.get(index, value))
    return [(warmup_s + (index + 0.5) * window_s, value) for index, value in sorted(floors.items())]


def slope_mb_per_min(points):
    if len(points) < 3:
        return float("nan")
    times, values = np.array(points).T
    return float(np.polyfit(times / 60.0, values, 1)[0])


def soak(config, weights, seconds, hz, malformed_every, set_every_s, sample_s, threads):
    import semseg_ros  # noqa: F401  (DDS profile for 640x480 images)
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from rcl_interfaces.srv import SetParameters
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import Image
    from semseg_ros.image_codec import numpy_to_image_msg

    command = [sys.executable, "-m", "semseg_ros.node", "--ros-args", "-r", f"__node:={NAME}",
               "-r", "image:=/soak/image", "-p", f"weights:={weights}", "-p", f"model_config:={config}",
               "-p", f"num_threads:={threads}", "-p", "diagnostics_period:=1.0"]
    log = tempfile.TemporaryFile()
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=str(REPO))
    rclpy.init()
    node = rclpy.create_node("soak_probe")
    publisher = node.create_publisher(Image, "/soak/image",
                                      QoSProfile(depth=2, reliability=ReliabilityPolicy.BEST_EFFORT))
    status = {}
    node.create_subscription(DiagnosticArray, "/diagnostics", lambda m: status.update(
        {kv.key: kv.value for s in m.status if NAME in s.name for kv in s.values}), 10)
    set_client = node.create_client(SetParameters, f"/{NAME}/set_parameters")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    threading.Thread(target=executor.spin, daemon=True).start()
    messages = [numpy_to_image_msg(frame, "rgb8") for frame in scenes(8)]
    samples, sets = [], 0
    try:
        deadline = time.monotonic() + 180
        while publisher.get_subscription_count() == 0:
            if process.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                raise RuntimeError(f"node did not start:\n{log.read().decode()[-3000:]}")
            time.sleep(0.05)
        start = time.monotonic()
        next_frame, next_sample, next_set, index = start, start, start + set_every_s, 0
        while time.monotonic() - start < seconds and process.poll() is None:
            now = time.monotonic()
            if now >= next_sample:
                samples.append((now - start, rss_mb(process.pid)))
                next_sample += sample_s
            if now >= next_set:
                value = 0.3 if sets % 2 else 0.5
                set_client.call_async(SetParameters.Request(parameters=[
                    Parameter("known_score_threshold", value=value).to_parameter_msg()]))
                sets += 1
                next_set += set_every_s
            msg = messages[index % len(messages)]
            stamp = time.time()
            msg.header.stamp.sec, msg.header.stamp.nanosec = int(stamp), int((stamp % 1) * 1e9)
            broken = malformed_every and index % malformed_every == 0
            publisher.publish(malformed(index // malformed_every, msg) if broken else msg)
            index += 1
            next_frame += 1.0 / hz
            time.sleep(max(0.0, next_frame - time.monotonic()))
        time.sleep(2.5)  # a last diagnostics message
        alive = process.poll() is None
    finally:
        process.send_signal(signal.SIGINT)
        exit_code = process.wait(60)
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return samples, index, sets, alive, exit_code, dict(status)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(REPO / "config/models/Synthetic/semseg_tiny.yaml"))
    parser.add_argument("--weights", default="", help="default: a random-weight checkpoint of --config")
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--hz", type=float, default=15.0)
    parser.add_argument("--malformed-every", type=int, default=10, help="every N-th message malformed (0: none)")
    parser.add_argument("--set-every-s", type=float, default=5.0)
    parser.add_argument("--sample-s", type=float, default=1.0)
    parser.add_argument("--window-s", type=float, default=15.0)
    parser.add_argument("--warmup-s", type=float, default=60.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json-out", default=None)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        config, weights = (args.config, args.weights) if args.weights else random_checkpoint(args.config, folder)
        samples, sent, sets, alive, exit_code, status = soak(
            config, weights, args.seconds, args.hz, args.malformed_every, args.set_every_s, args.sample_s,
            args.threads)
    warmup = min(args.warmup_s, args.seconds / 3.0)
    floors = window_floor(samples, warmup, args.window_s)
    slope = slope_mb_per_min(floors)
    counters = {key: int(status[key]) for key in ("frames_received", "frames_processed", "frames_dropped",
                                                  "frames_rejected", "frames_failed", "callback_errors")
                if key in status}
    print(f"soak {args.seconds:.0f} s at {args.hz:.0f} Hz: {sent} messages sent, {sets} parameter sets; node "
          f"{'alive' if alive else 'DIED'}, exit code {exit_code} on SIGINT")
    print(f"RSS {samples[0][1]:.1f} MB at start, {samples[-1][1]:.1f} MB at the end, {max(v for _, v in samples):.1f} "
          f"MB peak; floor per {args.window_s:.0f} s after {warmup:.0f} s: {[round(v, 1) for _, v in floors]}; "
          f"slope {slope:+.2f} MB/min")
    print(f"node counters: {counters}")
    emit({"benchmark": "soak", "machine": machine(args.threads), "config": Path(args.config).name,
          "weights": Path(args.weights).name if args.weights else "random", "seconds": args.seconds,
          "hz": args.hz, "malformed_every": args.malformed_every, "messages_sent": sent, "parameter_sets": sets,
          "alive_at_end": alive, "exit_code": exit_code, "rss_start_mb": round(samples[0][1], 1),
          "rss_end_mb": round(samples[-1][1], 1), "rss_peak_mb": round(max(v for _, v in samples), 1),
          "warmup_s": warmup, "window_s": args.window_s, "rss_floor_mb": [(round(t, 1), round(v, 1)) for t, v in floors],
          "rss_slope_mb_per_min": round(slope, 3),
          "rss_samples": [(round(t, 1), round(v, 1)) for t, v in samples], "node_counters": counters},
         args.json_out)
    return 0 if alive and exit_code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
