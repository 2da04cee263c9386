"""Replay a camera bag into the live perception node and record what it answers.

    semseg-replay --bag demo.bag --out recording --start-node --every-frame
    semseg-replay --bag demo.bag --out recording --rate 0.5          # a node that is already running

Input messages are published as the bag's raw CDR bytes on real topics (bag timing scaled by
``--rate``, or in ``--every-frame`` mode one image at a time, the next only after the node answered the
previous one). The node's ``detections``, ``instance_mask`` and latched ``label_info`` (and optionally
``debug_image``) are recorded to a new bag with their receipt time, plus one publish-time mark per input frame, for
``semseg-score-bag``.
"""
import argparse
import importlib
import struct
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from tqdm import tqdm

import semseg_ros  # noqa: F401 - fills in the ROS runtime environment before rclpy starts
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from diagnostic_msgs.msg import DiagnosticArray
from semseg_ros.bag_tools.bag_io import STORAGES, BagError, iter_messages, open_reader
from semseg_ros.bag_tools.make_bag import GROUNDTRUTH_FILE, load_groundtruth
from semseg_ros.bag_tools.node_process import NodeProcess, NodeSpec, ReplayError
from semseg_ros.bag_tools.recording import RecordingWriter
from semseg_ros.bag_tools.typestore import DETECTIONS_3D_TYPE, DETECTIONS_TYPE, IMAGE_TYPE, LABEL_INFO_TYPE

DEFAULT_NODE_NAME = "perception_node"
DIAGNOSTICS_WAIT_S = 3.0  # for the node's first /diagnostics before the first frame (it sends one a second)


def cdr_header_stamp(raw) -> int:
    """Stamp (ns) of a message that starts with a std_msgs/Header, read from its CDR bytes: the
    encapsulation header (4 bytes, byte 1 = 1 for little endian) is followed by sec (int32), nanosec."""
    order = "<" if raw[1] == 1 else ">"
    sec, nanosec = struct.unpack_from(order + "iI", raw, 4)
    return sec * 1_000_000_000 + nanosec


def message_class(msgtype: str):
    """rclpy message class for 'pkg/msg/Name'."""
    package, _, name = msgtype.split("/")
    try:
        return getattr(importlib.import_module(f"{package}.msg"), name)
    except (ImportError, AttributeError) as error:
        raise ReplayError(f"message type {msgtype} is not importable here ({error}); "
                          f"is its interface package built?") from error


@dataclass
class ReplaySummary:
    recording: Path
    mode: str
    frames: int
    answered: int
    unanswered: int
    wall_s: float
    node_counts: Dict[str, int]  # the node's frame accounting (/diagnostics) over the replay; empty if none came

    def explain(self) -> str:
        """Where unanswered frames went, by the node's own accounting; '' when every frame was answered."""
        if not self.unanswered:
            return ""
        counts = self.node_counts
        if not counts:
            return "the node published no /diagnostics, so where the frames went is unknown"
        never_arrived = max(self.frames - counts["frames_received"], 0)
        parts = [f"received {counts['frames_received']} of {self.frames}",
                 f"processed {counts['frames_processed']}",
                 f"dropped {counts['frames_dropped']} (the model was busy: replaced by a newer frame in latest-frame "
                 f"mode, or the every-frame queue was full)",
                 f"rejected {counts['frames_rejected']}", f"failed {counts['frames_failed']}"]
        text = "the node reports: " + ", ".join(parts)
        if never_arrived:
            text += (f"; {never_arrived} never reached it (the middleware counted "
                     f"{counts['frames_lost_in_transport']} as lost): best-effort input drops frames under load, "
                     f"--param image_qos.reliability:=reliable makes the transport resend them")
        return text


def node_output_topic(node_name: str, namespace: str, name: str) -> str:
    ns = "/" + namespace.strip("/") if namespace.strip("/") else ""
    return f"{ns}/{node_name}/{name}"


class _Recorder:
    """Raw subscriptions on the node's outputs. Callbacks (executor thread) only queue the bytes with
    their receipt time; the main thread writes them (sqlite3 objects must stay in their thread)."""

    def __init__(self, node, writer: RecordingWriter, topics: Dict[str, str]):
        self.writer = writer
        self.changed = threading.Condition()
        self.answers: Dict[str, set] = {topic: set() for topic in topics}
        self.pending: deque = deque()
        self.last_receipt_ns = 0
        self.node = node
        self.topics = topics
        self.subscriptions = []
        self.node_counts: Dict[str, int] = {}
        self._counts_before: Optional[Dict[str, int]] = None

    def watch_diagnostics(self, node_fqn: str) -> None:
        """Keep the node's latest frame accounting from /diagnostics (not recorded): it tells an unanswered
        frame that never arrived from one the node dropped or failed."""
        def on_diagnostics(msg):
            for status in msg.status:
                if status.name == f"{node_fqn}: perception":
                    values = {kv.key: kv.value for kv in status.values}
                    with self.changed:
                        self.node_counts = {key: int(value) for key, value in values.items()
                                            if key.startswith("frames_") and value.isdigit()}
                        self.changed.notify_all()
        self.subscriptions.append(self.node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10))

    def mark_counts_before(self, timeout_s: float) -> None:
        """The node's counts before the first frame (waiting up to ``timeout_s`` for its first /diagnostics): a
        node that ran before the replay has counted other frames."""
        with self.changed:
            self.changed.wait_for(lambda: bool(self.node_counts), timeout_s)
            self._counts_before = dict(self.node_counts)

    def counts_during_replay(self) -> Dict[str, int]:
        with self.changed:
            before = self._counts_before or {}
            return {key: value - before.get(key, 0) for key, value in self.node_counts.items()}

    def subscribe(self, timeout_s: float, still_ok) -> None:
        """Subscribe once each topic has a publisher, with QoS matching what it offers."""
        deadline = time.monotonic() + timeout_s
        for topic, msgtype in self.topics.items():
            while not self.node.get_publishers_info_by_topic(topic):
                still_ok()
                if time.monotonic() > deadline:
                    raise ReplayError(f"no publisher on {topic} after {timeout_s:.0f} s: is the node running "
                                      f"under that name (see --node-name / --namespace)?")
                time.sleep(0.1)
            offered = self.node.get_publishers_info_by_topic(topic)[0].qos_profile
            reliable = offered.reliability == ReliabilityPolicy.RELIABLE
            latched = offered.durability == DurabilityPolicy.TRANSIENT_LOCAL  # ~/label_info, sent once
            qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=200,
                             reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)
            self.subscriptions.append(self.node.create_subscription(
                message_class(msgtype), topic, lambda raw, t=topic: self._on_message(t, raw), qos, raw=True))

    def _on_message(self, topic: str, raw: bytes) -> None:
        receipt = time.time_ns()
        stamp = cdr_header_stamp(raw)
        with self.changed:
            self.pending.append((topic, raw, receipt))
            self.answers[topic].add(stamp)
            self.last_receipt_ns = receipt
            self.changed.notify_all()

    def flush(self) -> None:
        """Write the queued outputs (main thread only)."""
        while True:
            with self.changed:
                if not self.pending:
                    return
                topic, raw, receipt = self.pending.popleft()
            self.writer.write_output(topic, raw, receipt)

    def answered(self, stamp: int, required: Sequence[str]) -> bool:
        return all(stamp in self.answers[t] for t in required)


def _bag_topics(bag: Path, image_topic: Optional[str]):
    """(image topic, [(topic, msgtype)] of everything to publish)."""
    with open_reader(bag) as reader:
        topics = {c.topic: c.msgtype for c in reader.connections}
    if image_topic is None:
        if (bag / GROUNDTRUTH_FILE).is_file():
            image_topic = load_groundtruth(bag)["image_topic"]
        else:
            images = [t for t, m in topics.items() if m == IMAGE_TYPE]
            if len(images) != 1:
                raise BagError(f"bag {bag} has {len(images)} image topics ({', '.join(images) or 'none'}); "
                               f"choose one with --image-topic")
            image_topic = images[0]
    if image_topic not in topics:
        raise BagError(f"bag {bag} has no topic {image_topic!r} (topics in it: {', '.join(sorted(topics)) or 'none'})")
    if topics[image_topic] != IMAGE_TYPE:
        raise BagError(f"topic {image_topic} in bag {bag} is {topics[image_topic]}, not {IMAGE_TYPE}")
    return image_topic, topics


def replay(bag, out, storage: str = "sqlite3", every_frame: bool = True, rate: float = 1.0,
           image_topic: Optional[str] = None, node_name: str = DEFAULT_NODE_NAME, namespace: str = "",
           record_debug: bool = False, start_node: Optional[NodeSpec] = None, answer_timeout_s: float = 60.0,
           drain_timeout_s: float = 5.0, discovery_timeout_s: float = 30.0,
           progress: bool = True, record_3d: bool = False) -> ReplaySummary:
    """Replay ``bag`` into the node and record its answers to the new bag ``out``.

    ``record_3d``: also record ~/detections_3d (node with use_depth:=true) and count a frame as answered only
    once it arrived too."""
    bag, out = Path(bag), Path(out)
    if rate <= 0:
        raise ReplayError(f"rate must be > 0, got {rate}")
    image_topic, bag_topics = _bag_topics(bag, image_topic)
    outputs, required = _output_topics(node_name, namespace, record_debug, record_3d)
    mode = "every_frame" if every_frame else "timed"
    custom = {"input_bag": str(bag.resolve()), "image_topic": image_topic, "mode": mode,
              "rate": str(rate), "node_name": node_name, "detections_topic": required[0],
              "instance_mask_topic": required[1],
              "label_info_topic": node_output_topic(node_name, namespace, "label_info")}
    if record_3d:
        custom["detections_3d_topic"] = required[2]

    session = _RosSession()
    node_process = writer = recorder = None
    started = time.monotonic()
    try:
        if start_node is not None:
            node_process = NodeProcess(node_name, namespace, image_topic, start_node)

        def still_ok():
            session.check()
            if node_process is not None and not node_process.alive():
                raise ReplayError(node_process.failure())

        publishers = {topic: session.node.create_publisher(message_class(msgtype), topic, 100)
                      for topic, msgtype in bag_topics.items()}
        writer = RecordingWriter(out, storage, outputs, custom)
        recorder = _Recorder(session.node, writer, outputs)
        recorder.watch_diagnostics(node_output_topic(node_name, namespace, "").rstrip("/"))
        session.start()
        timeout = start_node.startup_timeout_s if start_node else discovery_timeout_s
        recorder.subscribe(timeout, still_ok)
        _wait_until_connected(session.node, publishers[image_topic], image_topic, recorder, required, timeout,
                              still_ok)
        recorder.mark_counts_before(DIAGNOSTICS_WAIT_S)
        sent = _publish_bag(bag, image_topic, publishers, recorder, writer, required, every_frame, rate,
                            answer_timeout_s, still_ok, f"replay ({mode})", progress)
        answered_count = _drain_answers(recorder, sent, required, drain_timeout_s)
        recorder.flush()
        return ReplaySummary(out, mode, len(sent), answered_count, len(sent) - answered_count,
                             time.monotonic() - started, recorder.counts_during_replay())
    finally:
        session.stop_spinning()
        if writer is not None:
            if recorder is not None:
                recorder.flush()
            writer.close()
        session.close()
        if node_process is not None:
            node_process.stop()


class _RosSession:
    """The replay's own rclpy context and node, spun by an executor thread; its errors surface via `check`."""

    def __init__(self):
        self.context = rclpy.Context()
        rclpy.init(args=[], context=self.context)
        self.node = rclpy.create_node("semseg_replay", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.errors: List[BaseException] = []
        self.spinner = threading.Thread(target=self._spin, name="replay-executor", daemon=True)

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except BaseException as error:  # noqa: BLE001 - surfaced by check() in the main thread
            self.errors.append(error)

    def start(self) -> None:
        self.spinner.start()

    def check(self) -> None:
        if self.errors:
            raise ReplayError(f"the recorder failed: {type(self.errors[0]).__name__}: {self.errors[0]}")

    def stop_spinning(self) -> None:
        self.executor.shutdown(timeout_sec=5.0)
        if self.spinner.is_alive():
            self.spinner.join(5.0)

    def close(self) -> None:
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


def _output_topics(node_name: str, namespace: str, record_debug: bool,
                   record_3d: bool) -> Tuple[Dict[str, str], List[str]]:
    """({topic: msgtype} of the node outputs to record, the topics every frame must be answered on)."""
    outputs = {node_output_topic(node_name, namespace, "detections"): DETECTIONS_TYPE,
               node_output_topic(node_name, namespace, "instance_mask"): IMAGE_TYPE}
    if record_3d:
        outputs[node_output_topic(node_name, namespace, "detections_3d")] = DETECTIONS_3D_TYPE
    required = list(outputs)
    outputs[node_output_topic(node_name, namespace, "label_info")] = LABEL_INFO_TYPE  # decodes the class ids
    if record_debug:
        outputs[node_output_topic(node_name, namespace, "debug_image")] = IMAGE_TYPE
    return outputs, required


def _wait_until_connected(node, image_publisher, image_topic: str, recorder: _Recorder, required: Sequence[str],
                          timeout: float, still_ok) -> None:
    """Until the node subscribes to our images (it is active) and our subscriptions to its outputs are
    matched too, so that no first answer is lost."""
    deadline = time.monotonic() + timeout
    while image_publisher.get_subscription_count() == 0:
        still_ok()
        if time.monotonic() > deadline:
            raise ReplayError(f"nobody subscribes to {image_topic} after {timeout:.0f} s")
        time.sleep(0.1)
    for topic in required:
        while node.count_publishers(topic) == 0 or not _matched(recorder, topic):
            still_ok()
            if time.monotonic() > deadline:
                raise ReplayError(f"the recorder did not match the publisher of {topic}")
            time.sleep(0.05)


def _publish_bag(bag: Path, image_topic: str, publishers: Dict, recorder: _Recorder, writer: RecordingWriter,
                 required: Sequence[str], every_frame: bool, rate: float, answer_timeout_s: float, still_ok,
                 description: str, progress: bool) -> List[int]:
    """Publish every message of the bag (bag timing scaled by ``rate``, or each image only after the previous
    one was answered); mark each image's publish time in the recording. Returns the image stamps sent."""
    sent: List[int] = []
    with open_reader(bag) as reader:
        total = sum(c.msgcount for c in reader.connections if c.topic == image_topic)
        bar = tqdm(total=total, desc=description, unit="frame", disable=not progress)
        bag_start, wall_start = None, time.monotonic()
        for connection, log_time, raw in iter_messages(reader):
            recorder.flush()  # before the wait, so that writing the outputs never delays a publish
            if not every_frame:  # keep the bag's timing, scaled
                bag_start = log_time if bag_start is None else bag_start
                delay = wall_start + (log_time - bag_start) / 1e9 / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            still_ok()
            if connection.topic != image_topic:
                publishers[connection.topic].publish(bytes(raw))
                continue
            stamp = cdr_header_stamp(raw)
            writer.write_sent(stamp, time.time_ns())
            publishers[image_topic].publish(bytes(raw))
            sent.append(stamp)
            bar.update(1)
            if every_frame and not _wait_for_answer(recorder, stamp, required, answer_timeout_s, still_ok):
                bar.write(f"frame {stamp} unanswered after {answer_timeout_s:.0f} s")
                still_ok()
        bar.close()
    return sent


def _drain_answers(recorder: _Recorder, sent: Sequence[int], required: Sequence[str], drain_timeout_s: float) -> int:
    """Let the last answers arrive: until all are in, or nothing new came for ``drain_timeout_s`` (long enough
    for the node's next /diagnostics, which then counts every frame).
    Returns how many sent frames were answered on every required topic."""
    with recorder.changed:
        while not all(recorder.answered(s, required) for s in sent):
            before = recorder.last_receipt_ns
            recorder.changed.wait(drain_timeout_s)
            if recorder.last_receipt_ns == before:
                break
        return sum(recorder.answered(s, required) for s in sent)


def _wait_for_answer(recorder: _Recorder, stamp: int, required, timeout_s: float, still_ok) -> bool:
    """Wait until both outputs for ``stamp`` arrived; checks on the node every half second."""
    deadline = time.monotonic() + timeout_s
    with recorder.changed:
        while not recorder.answered(stamp, required):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            recorder.changed.wait(min(0.5, left))
            still_ok()
    return True


def _matched(recorder: _Recorder, topic: str) -> bool:
    return any(s.topic_name == topic and s.get_publisher_count() > 0 for s in recorder.subscriptions)


def node_param(text: str):
    """argparse type of NAME:=VALUE node parameters."""
    if ":=" not in text:
        raise argparse.ArgumentTypeError(f"expected name:=value, got {text!r}")
    return tuple(text.split(":=", 1))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="semseg-replay", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--bag", required=True, help="input bag folder (e.g. made by semseg-make-bag)")
    parser.add_argument("--out", required=True, help="recording bag folder to create (must not exist)")
    parser.add_argument("--storage", choices=sorted(STORAGES), default="sqlite3",
                        help="storage of the recording (default sqlite3)")
    timing = parser.add_mutually_exclusive_group()
    timing.add_argument("--every-frame", action="store_true",
                        help="publish one image at a time and wait for the node's answer before the next "
                             "(for evaluation; the node should run with process_every_frame:=true)")
    timing.add_argument("--rate", type=float, default=1.0,
                        help="bag timing speed factor, e.g. 0.5 = half speed (default 1.0)")
    parser.add_argument("--image-topic", default=None,
                        help="image topic in the bag (default: the one its ground truth names, or its only image topic)")
    parser.add_argument("--node-name", default=DEFAULT_NODE_NAME,
                        help=f"name of the node whose ~/detections and ~/instance_mask are recorded "
                             f"(default {DEFAULT_NODE_NAME})")
    parser.add_argument("--namespace", default="", help="namespace of that node (default none)")
    parser.add_argument("--record-debug", action="store_true",
                        help="also record ~/debug_image (the node renders it only while someone subscribes)")
    parser.add_argument("--start-node", action="store_true",
                        help="start the node as a child process (python -m semseg_ros.node) with the image "
                             "topic remapped to the bag's, and stop it at the end")
    parser.add_argument("--weights", default=None, help="with --start-node: model checkpoint (default: embedded model)")
    parser.add_argument("--config", default=None, help="with --start-node: model config YAML")
    parser.add_argument("--device", default=None, help="with --start-node: cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--param", type=node_param, action="append", default=[], metavar="NAME:=VALUE",
                        help="with --start-node: any other node parameter (repeatable)")
    parser.add_argument("--node-log", default=None,
                        help="with --start-node: file for the node's output (default <out>.node.log)")
    parser.add_argument("--startup-timeout", type=float, default=180.0,
                        help="seconds to wait for a started node to load its model (default 180)")
    parser.add_argument("--answer-timeout", type=float, default=60.0,
                        help="--every-frame: seconds to wait for one answer before going on (default 60)")
    parser.add_argument("--drain-timeout", type=float, default=5.0,
                        help="at the end, stop waiting for answers after this many seconds without one (default 5)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def node_spec_from_args(args, every_frame: bool) -> NodeSpec:
    params = {"process_every_frame": "true" if every_frame else "false"}
    if every_frame:
        params["image_qos.reliability"] = "reliable"  # no frame may be lost when each one is awaited
        params["queue_size"] = "1000"
    if args.weights:
        params["weights"] = str(Path(args.weights).resolve())
    if args.config:
        params["model_config"] = str(Path(args.config).resolve())
    if args.device:
        params["device"] = args.device
    params.update(dict(args.param))
    log = Path(args.node_log) if args.node_log else Path(str(Path(args.out)) + ".node.log")
    return NodeSpec(params, log, args.startup_timeout)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    spec = node_spec_from_args(args, args.every_frame) if args.start_node else None
    try:
        summary = replay(args.bag, args.out, args.storage, args.every_frame, args.rate, args.image_topic,
                         args.node_name, args.namespace, args.record_debug, spec, args.answer_timeout,
                         args.drain_timeout, progress=not args.quiet)
    except (BagError, ReplayError, OSError) as error:
        print(f"semseg-replay: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("semseg-replay: interrupted; the recording so far is closed and readable", file=sys.stderr)
        return 130
    print(f"replayed {summary.frames} frames ({summary.mode}) in {summary.wall_s:.1f} s: {summary.answered} "
          f"answered, {summary.unanswered} unanswered; recording {summary.recording}")
    if summary.unanswered:
        print(summary.explain())
    return 0 if summary.unanswered == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
