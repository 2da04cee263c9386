"""Reading and writing rosbag2 folders through rosbags, with errors that name the bag and the file.

Bags are written with metadata **version 8**: Humble's ``ros2 bag play`` refuses version 9, and Jazzy
reads both. rosbags has no default version; every writer here goes through `open_writer`.
"""
import contextlib
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Tuple

import yaml
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.rosbag2 import Reader, StoragePlugin, Writer

BAG_VERSION = 8
STORAGES = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}
STORAGE_SUFFIX = {"sqlite3": ".db3", "mcap": ".mcap"}

_ZERO = QosTime(sec=0, nsec=0)
# What a default rclpy publisher offers (reliable, volatile, keep last): `ros2 bag play` re-offers it.
RELIABLE_QOS = Qos(history=QosHistory.KEEP_LAST, depth=10, reliability=QosReliability.RELIABLE,
                   durability=QosDurability.VOLATILE, deadline=_ZERO, lifespan=_ZERO,
                   liveliness=QosLiveliness.AUTOMATIC, liveliness_lease_duration=_ZERO,
                   avoid_ros_namespace_conventions=False)


class BagError(RuntimeError):
    """A bag that cannot be read or does not hold what a tool needs."""


def storage_plugin(name: str) -> StoragePlugin:
    try:
        return STORAGES[name]
    except KeyError:
        raise BagError(f"unknown storage {name!r}; use one of {', '.join(STORAGES)}") from None


def open_writer(path, storage: str = "sqlite3", custom_data: Optional[Dict[str, str]] = None) -> Writer:
    """An opened version-8 Writer for a new bag folder (refuses to overwrite an existing one).

    ``custom_data`` is never left empty: rosbags writes an empty one as YAML ``null``, which older
    rosbag2 readers may refuse where they expect a map."""
    path = Path(path)
    if path.exists():
        raise BagError(f"output bag {path} exists already; remove it or choose another path")
    writer = Writer(path, version=BAG_VERSION, storage_plugin=storage_plugin(storage))
    for key, value in {"writer": "semseg_ros", **(custom_data or {})}.items():
        writer.set_custom_data(key, str(value))
    writer.open()
    return writer


def _bag_files(path: Path) -> List[Path]:
    files = [p for p in sorted(path.iterdir()) if p.suffix in (".db3", ".mcap")] if path.is_dir() else []
    return files


@contextlib.contextmanager
def open_reader(path) -> Iterator[Reader]:
    """An opened rosbags Reader; missing, unreadable or corrupt bags raise BagError naming the path."""
    path = Path(path)
    if not path.exists():
        raise BagError(f"bag {path} does not exist")
    if not path.is_dir():
        raise BagError(f"bag {path} is not a rosbag2 folder (expected a folder with metadata.yaml)")
    if not (path / "metadata.yaml").is_file():
        raise BagError(f"bag {path} has no metadata.yaml ({path / 'metadata.yaml'} is missing)")
    reader = Reader(path)
    try:
        reader.open()
    except Exception as error:  # noqa: BLE001 - rosbags, sqlite3 and mcap raise many kinds
        files = ", ".join(str(p) for p in _bag_files(path)) or "no storage file"
        raise BagError(f"cannot open bag {path} ({files}): {type(error).__name__}: {error}") from error
    try:
        yield reader
    finally:
        reader.close()


def custom_data(path) -> Dict[str, str]:
    """The bag's metadata ``custom_data`` map (empty when absent)."""
    with open(Path(path) / "metadata.yaml") as f:
        info = (yaml.safe_load(f) or {}).get("rosbag2_bagfile_information", {})
    return dict(info.get("custom_data") or {})


def connections_for(reader: Reader, topics: Iterable[str]) -> Dict[str, list]:
    """topic -> connections, for each requested topic; BagError naming the missing topic otherwise."""
    found: Dict[str, list] = {}
    for topic in topics:
        conns = [c for c in reader.connections if c.topic == topic]
        if not conns:
            present = ", ".join(sorted({c.topic for c in reader.connections})) or "none"
            raise BagError(f"bag {reader.path} has no topic {topic!r} (topics in it: {present})")
        found[topic] = conns
    return found


def iter_messages(reader: Reader, connections: Optional[list] = None) -> Iterator[Tuple[object, int, bytes]]:
    """(connection, log time ns, raw CDR bytes) in log-time order; a storage file that fails to decode
    mid-way raises BagError naming the bag's files."""
    iterator = reader.messages(connections=connections or reader.connections)
    while True:
        try:
            item = next(iterator)
        except StopIteration:
            return
        except Exception as error:  # noqa: BLE001
            files = ", ".join(str(p) for p in _bag_files(Path(reader.path))) or str(reader.path)
            raise BagError(f"corrupt data in bag {reader.path} ({files}): {type(error).__name__}: {error}") \
                from error
        yield item
