"""The project sets the ROS runtime environment itself, and ROS tooling finds the package in the venv."""

import os
import subprocess
import sys
from pathlib import Path

from semseg_ros import env as ros_env_module

REPO = Path(__file__).resolve().parents[2]
VENV = Path(sys.prefix)


def test_configure_fills_in_only_what_is_missing():
    environ = {"PATH": "/usr/bin"}
    added = ros_env_module.configure(environ)
    profile = str(REPO / "config" / "fastdds_profile.xml")
    assert environ["AMENT_PREFIX_PATH"].split(os.pathsep) == [sys.prefix]
    assert environ["FASTRTPS_DEFAULT_PROFILES_FILE"] == profile == environ["FASTDDS_DEFAULT_PROFILES_FILE"]
    assert set(added) >= {"AMENT_PREFIX_PATH", "FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_DEFAULT_PROFILES_FILE"}
    assert ros_env_module.configure(environ) == {}, "a second call must change nothing"


def test_configure_keeps_a_users_settings():
    environ = {"AMENT_PREFIX_PATH": "/opt/ros/jazzy", "FASTDDS_DEFAULT_PROFILES_FILE": "/my/profile.xml",
               "ROS_LOG_DIR": "/my/logs"}
    ros_env_module.configure(environ)
    assert environ["AMENT_PREFIX_PATH"].split(os.pathsep) == ["/opt/ros/jazzy", sys.prefix]
    assert environ["FASTDDS_DEFAULT_PROFILES_FILE"] == "/my/profile.xml"
    assert "FASTRTPS_DEFAULT_PROFILES_FILE" not in environ  # the user chose a profile: do not mix in ours
    assert environ["ROS_LOG_DIR"] == "/my/logs"


def test_self_check_passes_from_a_bare_environment(tmp_path):
    """What a user gets in a new shell: no ROS variables at all."""
    bare = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
            "ROS_DOMAIN_ID": os.environ["ROS_DOMAIN_ID"]}
    result = subprocess.run([str(VENV / "bin" / "semseg-env"), "--check"], env=bare, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("[ok]") == 4 and "FAIL" not in result.stdout, result.stdout


def test_shell_exports_are_valid_and_complete(tmp_path):
    bare = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    script = f'eval "$({VENV / "bin" / "semseg-env"})" && echo "$AMENT_PREFIX_PATH|$FASTDDS_DEFAULT_PROFILES_FILE"'
    result = subprocess.run(["bash", "-c", script], env=bare, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{sys.prefix}|{REPO / 'config' / 'fastdds_profile.xml'}"


def test_ros_tooling_finds_the_package_and_its_node_executable_in_the_venv():
    from ament_index_python.packages import get_package_prefix, get_package_share_directory

    share = Path(get_package_share_directory("semseg_ros"))
    assert (share / "package.xml").is_file()
    assert (share / "launch" / "perception.launch.py").is_file()
    assert (share / "config" / "fastdds_profile.xml").is_file()
    assert Path(get_package_prefix("vision_msgs")).resolve() == VENV.resolve()
    node = Path(get_package_prefix("semseg_ros")) / "lib" / "semseg_ros" / "perception_node"
    assert node.exists() and os.access(node, os.X_OK), f"{node} is where launch_ros looks for the node"
    assert "semseg_ros.node" in node.read_text(), "the link must lead to the perception_node console script"


def test_a_second_setup_run_only_checks():
    result = subprocess.run([str(REPO / "scripts" / "setup.sh"), "--check"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, f"environment not current; run 'make setup':\n{result.stdout}{result.stderr}"
    assert "complete and current" in result.stdout
