"""The repository builds as a ROS 2 package with colcon, and installs the node where `ros2 launch` looks."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VENV = Path(sys.prefix)
SKIP = shutil.ignore_patterns(".git", ".venv", "build", "install", "log", "datasets", "output*", "__pycache__",
                              "*.egg-info", ".pytest_cache", "*.pth", "*.pt", "*.pkl")


@pytest.mark.slow
def test_colcon_build_installs_the_node_where_ros2_launch_looks(tmp_path):
    colcon = VENV / "bin" / "colcon"
    assert colcon.exists(), "colcon-common-extensions is part of requirements-build.txt; run 'make setup'"
    workspace = tmp_path / "ws"
    source = workspace / "src" / "semseg_ros"
    shutil.copytree(REPO, source, ignore=SKIP)
    environment = dict(os.environ, PATH=f"{VENV / 'bin'}:{os.environ['PATH']}", AMENT_PREFIX_PATH=str(VENV),
                       COLCON_HOME=str(tmp_path / "colcon_home"))
    result = subprocess.run(
        [str(colcon), "--log-base", str(workspace / "log"), "build", "--base-paths", "src",
         "--build-base", str(workspace / "build"), "--install-base", str(workspace / "install"),
         "--event-handlers", "console_direct-"],
        cwd=workspace, env=environment, capture_output=True, text=True, timeout=240,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    # exactly one package: interfaces/vision_msgs carries COLCON_IGNORE (a ROS install has its own)
    assert "Summary: 1 package finished" in result.stdout, result.stdout[-2000:]
    prefix = workspace / "install" / "semseg_ros"
    assert not (workspace / "install" / "vision_msgs").exists()

    node = prefix / "lib" / "semseg_ros" / "perception_node"  # launch_ros: $prefix/lib/<package>/<executable>
    assert node.is_file() and os.access(node, os.X_OK)
    assert node.read_text().startswith("#!") and "perception_node" in node.read_text()
    share = prefix / "share" / "semseg_ros"
    assert (share / "package.xml").is_file()
    assert (share / "launch" / "perception.launch.py").is_file()
    assert (share / "config" / "fastdds_profile.xml").is_file()
    assert (prefix / "share" / "ament_index" / "resource_index" / "packages" / "semseg_ros").is_file()

    # what `ros2 launch semseg_ros ...` resolves after `source install/setup.bash`
    lookup = subprocess.run(
        [sys.executable, "-c", "from ament_index_python.packages import get_package_prefix as p; print(p('semseg_ros'))"],
        env=dict(os.environ, AMENT_PREFIX_PATH=f"{prefix}:{VENV}"), capture_output=True, text=True, timeout=60,
    )
    assert lookup.returncode == 0 and lookup.stdout.strip() == str(prefix), lookup.stderr
    # the installed package imports from the install space (not the checkout)
    site = next(prefix.glob("lib/python3*/site-packages"))
    assert (site / "semseg_ros" / "env.py").is_file() and (site / "semseg_core" / "__init__.py").is_file()
    entry_points = "".join(p.read_text() for p in site.glob("semseg_ros*/entry_points.txt"))
    assert "perception_node = semseg_ros.node_main:main" in entry_points, entry_points
