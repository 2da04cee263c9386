"""ROS 2 runtime environment for semseg_ros, filled in by the project instead of the user.

On a pip-only machine (ROS 2 Jazzy wheels in the project venv, no `source /opt/ros/...`), rclpy and
ament_index need a few variables that a ROS install's `setup.bash` would set. `configure()` runs at
`import semseg_ros` and fills in only what is missing, so a real ROS install or a user's own settings win:

- ``AMENT_PREFIX_PATH`` gains ``sys.prefix`` when the venv holds ament resources (the ROS wheels and the
  vision_msgs built by set-up): ament_index / launch_ros find packages there.
- ``FASTRTPS_DEFAULT_PROFILES_FILE`` and ``FASTDDS_DEFAULT_PROFILES_FILE`` point at the shipped Fast DDS
  profile (16 MB shared-memory segment; without it best-effort images over 512 KB are mostly lost).
  Both names: Fast DDS 2.x reads the first, newer releases the second.
- ``ROS_LOG_DIR`` goes to a temp folder only when the default (``$ROS_HOME/log`` or ``~/.ros/log``)
  cannot be written.

It must run before ``rclpy.init()`` (DDS reads the profile when the first participant is created).
``LD_LIBRARY_PATH`` cannot be changed inside a running process; the ROS wheels' own bootstrapper
(``ros_wheels_bootstrapper.pth``) re-executes Python with ``$VIRTUAL_ENV/lib`` on it, which is where
set-up installs the vision_msgs libraries.

Shell use: ``eval "$(.venv/bin/python -m semseg_ros.env)"`` exports the same variables;
``.venv/bin/python -m semseg_ros.env --check`` checks that rclpy, the DDS profile and vision_msgs work.
This module imports only the standard library (it runs before anything ROS is loaded).
"""

import os
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Dict, MutableMapping, Optional

PROFILE_FILE_NAME = "fastdds_profile.xml"
PROFILE_VARIABLES = ("FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_DEFAULT_PROFILES_FILE")
PACKAGE_NAME = "semseg_ros"


def find_dds_profile() -> Optional[Path]:
    """The shipped Fast DDS profile: next to the sources (checkout / editable install) or in the
    package's ament share folder (colcon / installed package)."""
    candidates = [Path(__file__).resolve().parents[1] / "config" / PROFILE_FILE_NAME]
    prefixes = [sys.prefix] + os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)
    candidates += [Path(p) / "share" / PACKAGE_NAME / "config" / PROFILE_FILE_NAME for p in prefixes if p]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    return None


def _prefix_has_ament_index(prefix: str) -> bool:
    return (Path(prefix) / "share" / "ament_index" / "resource_index" / "packages").is_dir()


def _log_dir_writable(environ: MutableMapping[str, str]) -> bool:
    ros_home = environ.get("ROS_HOME") or os.path.join(os.path.expanduser("~"), ".ros")
    log_dir = Path(ros_home) / "log"
    probe = log_dir if log_dir.exists() else Path(ros_home) if Path(ros_home).exists() else Path(ros_home).parent
    return os.access(probe, os.W_OK)


def ros_environment(base: Optional[MutableMapping[str, str]] = None) -> Dict[str, str]:
    """The variables `configure` would add to `base` (default: os.environ), without changing it."""
    environ = os.environ if base is None else base
    added: Dict[str, str] = {}

    if _prefix_has_ament_index(sys.prefix):
        parts = [p for p in environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
        if sys.prefix not in parts and os.path.realpath(sys.prefix) not in map(os.path.realpath, parts):
            added["AMENT_PREFIX_PATH"] = os.pathsep.join(parts + [sys.prefix])

    if not any(environ.get(name) for name in PROFILE_VARIABLES):
        profile = find_dds_profile()
        if profile is not None:
            for name in PROFILE_VARIABLES:
                added[name] = str(profile)

    if not environ.get("ROS_LOG_DIR") and not _log_dir_writable(environ):
        added["ROS_LOG_DIR"] = os.path.join(tempfile.gettempdir(), "semseg_ros_log")

    return added


def configure(environ: Optional[MutableMapping[str, str]] = None) -> Dict[str, str]:
    """Fill in the missing ROS runtime variables in `environ` (default os.environ); returns what it set.
    Idempotent; never overrides a value that is already set."""
    environ = os.environ if environ is None else environ
    added = ros_environment(environ)
    environ.update(added)
    return added


def check() -> int:
    """Self-check: rclpy starts with the profile, vision_msgs imports, a message round-trips through
    serialization. Prints one line per item; returns a process exit code."""
    configure()
    ok = True

    def report(name: str, good: bool, detail: str) -> None:
        nonlocal ok
        ok = ok and good
        print(f"[{'ok' if good else 'FAIL'}] {name}: {detail}")

    report("python", sys.version_info[:2] >= (3, 10), sys.version.split()[0] + " at " + sys.executable)
    profile = os.environ.get("FASTRTPS_DEFAULT_PROFILES_FILE", "")
    report("DDS profile", bool(profile) and os.path.isfile(profile), profile or "not set")
    try:
        import rclpy  # before rclpy: `import semseg_ros` runs configure() from this module, rclpy after it
        from rclpy.serialization import deserialize_message, serialize_message

        rclpy.init(args=[])
        rclpy.shutdown()
        report("rclpy", True, f"init/shutdown with {os.environ.get('RMW_IMPLEMENTATION', 'rmw_fastrtps_cpp')}")
    except Exception as error:  # noqa: BLE001 - the point is to report any failure
        report("rclpy", False, f"{type(error).__name__}: {error}")
        return 1
    try:
        from vision_msgs.msg import Detection2D, Detection2DArray  # built by `make setup`: a missing one is reported

        msg = Detection2DArray(detections=[Detection2D(id="1")])
        back = deserialize_message(serialize_message(msg), Detection2DArray)
        report("vision_msgs", back.detections[0].id == "1", "Detection2DArray serializes")
    except Exception as error:  # noqa: BLE001
        report("vision_msgs", False, f"{type(error).__name__}: {error} (run 'make setup' to build it)")
    return 0 if ok else 1


def main(argv: Optional[list] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--check":
        return check()
    if argv and argv[0] in ("-h", "--help"):
        print("usage: python -m semseg_ros.env [--check]\n"
              "  no argument: print 'export NAME=value' lines for the ROS runtime variables\n"
              "  --check:     check rclpy, the DDS profile and vision_msgs")
        return 0
    current = dict(os.environ)
    current.update(ros_environment())
    names = ("AMENT_PREFIX_PATH",) + PROFILE_VARIABLES + ("ROS_LOG_DIR",)
    for name in names:
        if current.get(name):
            print(f"export {name}={shlex.quote(current[name])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
