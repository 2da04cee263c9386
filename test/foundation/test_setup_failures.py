"""A broken set-up step stops with a message that says what to do, and the next run repairs it.

Runs the set-up's own scripts in a temp copy of the repository; the interface build installs into a
temp prefix, so the shared .venv is never touched. To keep CI short the copy's interface package is cut
down to two messages (Point2D, Pose2D): the same script, CMake project and failure paths, a quarter of
the compile time. The full message set is checked in test_vision_msgs.py against what `make setup` built.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VENV = Path(sys.prefix)


@pytest.fixture
def repo_copy(tmp_path):
    copy = tmp_path / "repo"
    copy.mkdir()
    for name in ("scripts", "interfaces"):
        shutil.copytree(REPO / name, copy / name)
    for name in ("requirements.txt", "requirements-build.txt", "constraints.txt", "setup.py", "setup.cfg",
                 "package.xml"):
        shutil.copy2(REPO / name, copy / name)
    return copy


KEPT_MESSAGES = ("Point2D", "Pose2D")


def cut_down_interfaces(repo_copy):
    package = repo_copy / "interfaces" / "vision_msgs"
    for msg in (package / "msg").glob("*.msg"):
        if msg.stem not in KEPT_MESSAGES:
            msg.unlink()
    cmake = package / "CMakeLists.txt"
    lines = cmake.read_text().splitlines(keepends=True)
    kept = [line for line in lines
            if not (line.strip().startswith('"msg/') and line.strip().strip('"')[4:-4] not in KEPT_MESSAGES)]
    assert len(lines) - len(kept) == 16 - len(KEPT_MESSAGES), "CMakeLists.txt no longer lists msg files one per line"
    cmake.write_text("".join(kept))


def path_without(tool, tmp_path):
    """A PATH with every command of the current PATH except `tool` (as on a machine without it)."""
    bin_dir = tmp_path / f"bin_without_{tool}"
    bin_dir.mkdir()
    for folder in os.environ["PATH"].split(os.pathsep):
        if not os.path.isdir(folder):
            continue
        for entry in os.scandir(folder):
            target = bin_dir / entry.name
            if entry.name != tool and not target.exists() and os.access(entry.path, os.X_OK):
                target.symlink_to(entry.path)
    return str(bin_dir)


def run_interface_build(repo_copy, prefix, path=None):
    environment = dict(os.environ, SEMSEG_INTERFACE_PREFIX=str(prefix),
                       SEMSEG_INTERFACE_BUILD_DIR=str(repo_copy / "build" / "vision_msgs"))
    if path is not None:
        environment["PATH"] = path
    return subprocess.run([str(repo_copy / "scripts" / "build_interfaces.sh"), str(VENV)], env=environment,
                          capture_output=True, text=True, timeout=400)


@pytest.mark.slow
def test_interface_build_fails_clearly_then_the_next_run_repairs_it(repo_copy, tmp_path):
    cut_down_interfaces(repo_copy)
    prefix = tmp_path / "prefix"
    prefix.mkdir()

    # 1. no cmake on the machine
    result = run_interface_build(repo_copy, prefix, path=path_without("cmake", tmp_path))
    assert result.returncode != 0
    assert "'cmake' not found" in result.stderr and "apt-get install cmake" in result.stderr, result.stderr
    assert not (prefix / "share" / "vision_msgs").exists()

    # 2. a broken message definition
    broken = repo_copy / "interfaces" / "vision_msgs" / "msg" / "Point2D.msg"
    good_text = broken.read_text()
    broken.write_text("float65 x\nfloat64 y\n")
    result = run_interface_build(repo_copy, prefix)
    assert result.returncode != 0
    assert "interfaces/vision_msgs failed" in result.stderr, result.stderr
    assert "'float65 x' of 'vision_msgs/Point2D'" in result.stderr, "the message must name the bad line"
    assert "run 'make setup' again" in result.stderr

    # 3. cause fixed: the same command repairs it, nothing deleted by hand
    broken.write_text(good_text)
    result = run_interface_build(repo_copy, prefix)
    assert result.returncode == 0, result.stdout + result.stderr
    site = prefix / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
    probe = subprocess.run(
        [sys.executable, "-c", "import vision_msgs.msg as m; m.Pose2D(); print(m.__file__)"],
        env=dict(os.environ, PYTHONPATH=str(site), LD_LIBRARY_PATH=f"{prefix / 'lib'}:{os.environ.get('LD_LIBRARY_PATH', '')}"),
        capture_output=True, text=True, timeout=60,
    )
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip().startswith(str(site))


def test_setup_without_python311_stops_and_leaves_no_complete_looking_environment(repo_copy, tmp_path):
    venv = tmp_path / "venv"
    venv.mkdir()
    (venv / ".semseg_setup_stamp").write_text("stale stamp of an earlier complete set-up\n")
    environment = dict(os.environ, SEMSEG_VENV=str(venv), SEMSEG_PYTHON="python3.11-not-installed")
    result = subprocess.run([str(repo_copy / "scripts" / "setup.sh")], env=environment, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 1
    assert "SET-UP FAILED" in result.stderr and "python3.11-not-installed' not found" in result.stderr
    assert "apt-get install python3.11" in result.stderr
    assert not (venv / ".semseg_setup_stamp").exists(), "a failed set-up must not look complete"
    check = subprocess.run([str(repo_copy / "scripts" / "setup.sh"), "--check"], env=environment,
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 1 and "run 'make setup'" in check.stderr
