"""What `replay` records and `score` / `report` read: the layout of an output bag, and its frames decoded.

The recording holds the node's outputs exactly as received (raw CDR, log time = receipt time, wall
clock ns) plus one ``std_msgs/Header`` per replayed input frame on `SENT_TOPIC` (header stamp = the
frame's stamp, log time = when it was published), so latency needs no clock shared with the bag.
``custom_data`` names the input bag and the topics, so `score` needs only the recording's path.
The node's latched ``~/label_info`` (when recorded; topic in ``custom_data["label_info_topic"]``) decodes
``ObjectHypothesis.class_id``: the numeric id that its ``class_map`` names; a class name is accepted as well.
"""
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from semseg_core.constants import UNKNOWN_NAME
from semseg_ros.bag_tools.bag_io import RELIABLE_QOS, BagError, custom_data, iter_messages, open_reader, open_writer
from semseg_ros.bag_tools.typestore import (DETECTIONS_TYPE, HEADER_TYPE, IMAGE_TYPE, LABEL_INFO_TYPE,
                                            bag_typestore)
from semseg_ros.image_codec import image_msg_to_numpy

SENT_TOPIC = "/semseg_replay/sent"


def header_stamp_ns(msg) -> int:
    return int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)


@dataclass
class Output:
    stamp_ns: int
    receipt_ns: int
    raw: bytes


@dataclass
class Recording:
    path: Path
    custom: Dict[str, str]
    sent_ns: Dict[int, int] = field(default_factory=dict)        # frame stamp -> publish time
    detections: Dict[int, Output] = field(default_factory=dict)  # frame stamp -> first answer
    masks: Dict[int, Output] = field(default_factory=dict)
    duplicates: int = 0                                           # answers seen twice for one stamp
    class_map: Optional[Dict[int, str]] = None                    # the recorded LabelInfo: id -> class name

    @property
    def input_bag(self) -> Optional[str]:
        return self.custom.get("input_bag")


class RecordingWriter:
    """Writes a recording: `sent` marks per input frame and raw outputs per topic (thread-safe use is
    the caller's job; replay writes from one thread)."""

    def __init__(self, path, storage: str, topics: Dict[str, str], custom: Dict[str, str]):
        """``topics``: output topic -> message type; ``custom`` must name detections_topic and
        instance_mask_topic (score reads them back)."""
        self.store = bag_typestore()
        self.writer = open_writer(path, storage, custom)
        self.sent_connection = self.writer.add_connection(SENT_TOPIC, HEADER_TYPE, typestore=self.store,
                                                          offered_qos_profiles=[RELIABLE_QOS])
        self.connections = {topic: self.writer.add_connection(topic, msgtype, typestore=self.store,
                                                              offered_qos_profiles=[RELIABLE_QOS])
                            for topic, msgtype in topics.items()}

    def write_sent(self, stamp_ns: int, sent_ns: int, frame_id: str = "") -> None:
        Header = self.store.types[HEADER_TYPE]
        Time = self.store.types["builtin_interfaces/msg/Time"]
        header = Header(stamp=Time(sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000),
                        frame_id=frame_id)
        self.writer.write(self.sent_connection, sent_ns, self.store.serialize_cdr(header, HEADER_TYPE))

    def write_output(self, topic: str, raw: bytes, receipt_ns: int) -> None:
        self.writer.write(self.connections[topic], receipt_ns, raw)

    def close(self) -> None:
        self.writer.close()


def load_recording(path, detections_topic: Optional[str] = None,
                   instance_mask_topic: Optional[str] = None) -> Recording:
    """Index a recording by frame stamp; topics default to the ones `replay` noted in it."""
    store = bag_typestore()
    with open_reader(path) as reader:
        custom = custom_data(path)
        det_topic = detections_topic or custom.get("detections_topic")
        mask_topic = instance_mask_topic or custom.get("instance_mask_topic")
        if not det_topic or not mask_topic:
            raise BagError(f"recording {path} does not name its output topics; pass the detections and "
                           f"instance mask topics explicitly")
        topics = {c.topic for c in reader.connections}
        for topic in (det_topic, mask_topic):
            if topic not in topics:
                raise BagError(f"recording {path} has no topic {topic!r} (topics in it: "
                               f"{', '.join(sorted(topics)) or 'none'})")
        recording = Recording(Path(path), custom)
        info_topic = custom.get("label_info_topic")
        wanted = [c for c in reader.connections if c.topic in (det_topic, mask_topic, SENT_TOPIC, info_topic)]
        for connection, log_time, raw in iter_messages(reader, wanted):
            if connection.topic == info_topic:
                if recording.class_map is None:  # latched: the node publishes it once per configure
                    info = store.deserialize_cdr(raw, LABEL_INFO_TYPE)
                    recording.class_map = {int(c.class_id): str(c.class_name) for c in info.class_map}
                continue
            if connection.topic == SENT_TOPIC:
                header = store.deserialize_cdr(raw, "std_msgs/msg/Header")
                stamp = int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)
                recording.sent_ns.setdefault(stamp, log_time)
                continue
            msg = store.deserialize_cdr(raw, connection.msgtype)
            target = recording.detections if connection.topic == det_topic else recording.masks
            stamp = header_stamp_ns(msg)
            if stamp in target:
                recording.duplicates += 1
                continue
            target[stamp] = Output(stamp, log_time, bytes(raw))
    return recording


def answered_stamps(recording: Recording) -> List[int]:
    return sorted(set(recording.detections) & set(recording.masks))


def class_name_of(class_id: str, class_map: Optional[Dict[int, str]], where: str) -> str:
    """The class name of an ``ObjectHypothesis.class_id``: a decimal id is looked up in the recorded LabelInfo's
    class_map; anything else is taken as the class name itself."""
    text = str(class_id).strip()
    if not text.isdigit():
        return text
    if class_map is None:
        raise BagError(f"{where}: class_id {text!r} is a numeric id, but the recording holds no LabelInfo to "
                       f"decode it (record the node's ~/label_info, as semseg-replay does)")
    if int(text) not in class_map:
        raise BagError(f"{where}: class_id {text} is not in the recorded LabelInfo class_map "
                       f"(ids {sorted(class_map)})")
    return class_map[int(text)]


@dataclass
class FrameOutput:
    """One answered frame, decoded: what the overlay and the evaluators need."""
    stamp_ns: int
    boxes_cxcywh: np.ndarray   # N x 4
    scores: np.ndarray
    class_names: List[str]     # decoded: a known class name or "unknown"
    instance_ids: List[int]
    label_image: np.ndarray    # H x W uint16

    @property
    def is_known(self) -> np.ndarray:
        return np.array([name != UNKNOWN_NAME for name in self.class_names], bool)

    @property
    def boxes(self) -> np.ndarray:
        """xyxy, for drawing."""
        c = self.boxes_cxcywh
        return np.stack([c[:, 0] - c[:, 2] / 2, c[:, 1] - c[:, 3] / 2,
                         c[:, 0] + c[:, 2] / 2, c[:, 1] + c[:, 3] / 2], axis=1) if len(c) else np.zeros((0, 4))


def decode_frame(recording: Recording, stamp: int) -> FrameOutput:
    store = bag_typestore()
    det_msg = store.deserialize_cdr(recording.detections[stamp].raw, DETECTIONS_TYPE)
    mask_msg = store.deserialize_cdr(recording.masks[stamp].raw, IMAGE_TYPE)
    label, encoding = image_msg_to_numpy(mask_msg)
    if encoding not in ("mono16", "16UC1"):
        raise BagError(f"instance mask at stamp {stamp} has encoding {encoding!r}, expected mono16")
    boxes, scores, names, ids = [], [], [], []
    for det in det_msg.detections:
        if not det.results:
            raise BagError(f"detection {det.id!r} at stamp {stamp} has no hypothesis")
        hypothesis = det.results[0].hypothesis
        boxes.append([det.bbox.center.position.x, det.bbox.center.position.y, det.bbox.size_x, det.bbox.size_y])
        scores.append(hypothesis.score)
        names.append(class_name_of(hypothesis.class_id, recording.class_map,
                                   f"detection {det.id!r} at stamp {stamp}"))
        ids.append(int(det.id))
    return FrameOutput(stamp, np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(scores, np.float64),
                       names, ids, label)
