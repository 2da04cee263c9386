"""The rosbags typestore used by the bag tools: ROS 2 Jazzy's standard types plus vision_msgs.

vision_msgs is not part of rosbags' bundled stores, so its types are registered from the project's own
v4.1 ``.msg`` files (``interfaces/vision_msgs/msg`` in a checkout, or ``share/vision_msgs/msg`` of an
installed interface package). Same text as upstream, hence the same RIHS01 hashes: bags written here
carry definitions a real ROS install accepts.
"""
import os
import sys
from functools import lru_cache
from pathlib import Path
from typing import List, Optional

from rosbags.typesys import Stores, get_types_from_msg, get_typestore

IMAGE_TYPE = "sensor_msgs/msg/Image"
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"
HEADER_TYPE = "std_msgs/msg/Header"
DETECTIONS_TYPE = "vision_msgs/msg/Detection2DArray"
LABEL_INFO_TYPE = "vision_msgs/msg/LabelInfo"


def vision_msgs_dirs() -> List[Path]:
    """Folders that may hold the vision_msgs ``.msg`` files, most specific first."""
    candidates = [Path(__file__).resolve().parents[2] / "interfaces" / "vision_msgs" / "msg"]
    prefixes = [sys.prefix] + os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)
    candidates += [Path(p) / "share" / "vision_msgs" / "msg" for p in prefixes if p]
    return candidates


def find_vision_msgs_dir() -> Path:
    for folder in vision_msgs_dirs():
        if (folder / "Detection2DArray.msg").is_file():
            return folder
    searched = "\n  ".join(str(p) for p in vision_msgs_dirs())
    raise FileNotFoundError(f"vision_msgs .msg definitions not found; searched:\n  {searched}")


@lru_cache(maxsize=None)
def _build(msg_dir: Optional[str]):
    store = get_typestore(Stores.ROS2_JAZZY)
    folder = Path(msg_dir) if msg_dir else find_vision_msgs_dir()
    types = {}
    for path in sorted(folder.glob("*.msg")):
        types.update(get_types_from_msg(path.read_text(), f"vision_msgs/msg/{path.stem}"))
    store.register(types)
    return store


def bag_typestore(msg_dir: Optional[str] = None):
    """Jazzy typestore with vision_msgs registered (cached; treat it as read-only)."""
    return _build(str(msg_dir) if msg_dir else None)
