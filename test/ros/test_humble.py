"""ROS 2 Humble: Python 3.10 syntax and standard library, and the node on Humble's rclpy API.

No Humble wheels exist on the package index, so Humble's rclpy is simulated: ``humble_view/sitecustomize.py``
on PYTHONPATH hides the modules that Humble's rclpy 3.3 lacks (``rclpy.event_handler`` and the other
Iron/Jazzy-only ones), and the node and the pure tests then run through semseg_ros.compat's Humble fallbacks.
"""
import glob
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from vision_msgs.msg import Detection2DArray

from conftest import (TINY_CONFIG, NodeProcess, image_msg, publish_until_answered, test_image,
                      wait_until_subscribed)

REPO = Path(__file__).resolve().parents[2]
HUMBLE_VIEW = Path(__file__).resolve().parent / "humble_view"
PACKAGE_DIRS = ("semseg_core", "semseg_ros", "training", "launch", "benchmarks", "scripts", "test")

# Runs inside python3.10: every file compiles, and every standard-library name it imports or reads as
# ``module.name`` exists in 3.10; standard library = 3.10's and this Python's (catches tomllib, typing.Self, ExceptionGroup, enum.StrEnum, datetime.UTC...).
_CHECK_310 = r"""
import ast, importlib, sys
STDLIB = set(sys.stdlib_module_names) | set(sys.argv[1:])  # argv: the newer Python's standard library
problems = []
for path in sys.stdin.read().split():
    source = open(path, encoding="utf-8").read()
    try:
        tree = compile(source, path, "exec", ast.PyCF_ONLY_AST, dont_inherit=True)
    except SyntaxError as error:
        problems.append(f"{path}:{error.lineno}: {error.msg}")
        continue
    modules = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] not in STDLIB:
                    continue
                try:
                    importlib.import_module(alias.name)
                except ImportError as error:
                    problems.append(f"{path}:{node.lineno}: {error}")
                    continue
                if alias.asname or "." not in alias.name:
                    modules[alias.asname or alias.name] = alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] not in STDLIB:
                continue
            try:
                module = importlib.import_module(node.module)
            except ImportError as error:
                problems.append(f"{path}:{node.lineno}: {error}")
                continue
            for alias in node.names:
                if alias.name != "*" and not hasattr(module, alias.name):
                    try:
                        importlib.import_module(f"{node.module}.{alias.name}")
                    except ImportError:
                        problems.append(f"{path}:{node.lineno}: {node.module}.{alias.name} is not in Python 3.10")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules:
            try:
                module = importlib.import_module(modules[node.value.id])
            except ImportError as error:
                problems.append(f"{path}:{node.lineno}: {error}")
                continue
            if not hasattr(module, node.attr):
                problems.append(f"{path}:{node.lineno}: {modules[node.value.id]}.{node.attr} is not in Python 3.10")
        elif isinstance(node, ast.Name) and node.id in ("ExceptionGroup", "BaseExceptionGroup"):
            problems.append(f"{path}:{node.lineno}: {node.id} is not in Python 3.10")
print("\n".join(problems))
sys.exit(1 if problems else 0)
"""


def find_python310():
    """A working Python 3.10 interpreter: PATH, then pyenv's versions folder (its shim needs a version set)."""
    candidates = [shutil.which("python3.10")]
    pyenv_root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    candidates += sorted(glob.glob(os.path.join(pyenv_root, "versions", "3.10*", "bin", "python3.10")))
    candidates += ["/usr/bin/python3.10"]
    for candidate in candidates:
        if not candidate or not os.path.isfile(candidate):
            continue
        probe = subprocess.run([candidate, "-c", "import sys; assert sys.version_info[:2] == (3, 10)"],
                               capture_output=True)
        if probe.returncode == 0:
            return candidate
    return None


def test_every_python_file_is_python_3_10():
    python310 = find_python310()
    if python310 is None:
        pytest.skip("no Python 3.10 interpreter on this machine (looked on PATH, in pyenv's versions and "
                    "/usr/bin); Humble's Python cannot be checked here")
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.py"],
                           cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    files = [f for f in files if f.split("/")[0] in PACKAGE_DIRS and os.path.isfile(REPO / f)]
    assert len(files) > 50, files  # the whole tree, not an empty list
    check = subprocess.run([python310, "-I", "-c", _CHECK_310, *sorted(sys.stdlib_module_names)], input="\n".join(files), cwd=REPO,
                           capture_output=True, text=True, timeout=240)
    assert check.returncode == 0, f"not Python 3.10 (Humble):\n{check.stdout}{check.stderr}"


def test_the_python_3_10_check_catches_3_11_code(tmp_path):
    """The check above must be able to fail: 3.11-only syntax and standard library names are refused."""
    python310 = find_python310()
    if python310 is None:
        pytest.skip("no Python 3.10 interpreter on this machine")
    samples = {"group.py": "try:\n    pass\nexcept* ValueError:\n    pass\n",
               "toml.py": "import tomllib\n",
               "self.py": "from typing import Self\n",
               "utc.py": "import datetime\nZONE = datetime.UTC\n"}
    for name, text in samples.items():
        (tmp_path / name).write_text(text)
        check = subprocess.run([python310, "-I", "-c", _CHECK_310, *sorted(sys.stdlib_module_names)], input=str(tmp_path / name),
                               capture_output=True, text=True, timeout=60)
        assert check.returncode == 1 and name in check.stdout, (name, check.stdout, check.stderr)


def _humble_env():
    return {"PYTHONPATH": os.pathsep.join([str(HUMBLE_VIEW), str(REPO), os.environ.get("PYTHONPATH", "")])}


def test_the_humble_view_hides_jazzy_modules_and_compat_falls_back():
    code = ("import os, semseg_ros.compat as compat\n"
            "try:\n    import rclpy.event_handler\nexcept ImportError:\n    hidden = True\n"
            "else:\n    hidden = False\n"
            "print(os.environ.get('SEMSEG_HUMBLE_VIEW'), hidden, compat.EVENT_CALLBACKS_MODULE)")
    humble = subprocess.run([sys.executable, "-c", code], env={**os.environ, **_humble_env()},
                            capture_output=True, text=True, timeout=120)
    assert humble.stdout.split() == ["1", "True", "rclpy.qos_event"], humble.stdout + humble.stderr
    jazzy = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert jazzy.stdout.split() == ["None", "False", "rclpy.event_handler"], jazzy.stdout + jazzy.stderr


@pytest.mark.slow
def test_node_configures_activates_and_answers_on_humbles_rclpy(probe, tiny_weights, tmp_path):
    topic = "/humble_test/image"
    name = "humble_node"
    node = NodeProcess(name, {"weights": tiny_weights, "model_config": str(TINY_CONFIG),
                              "known_score_threshold": 0.0, "unknown_score_threshold": 0.0,
                              "image_qos.reliability": "reliable", "num_threads": 1},
                       remappings=[("image", topic)], log_dir=tmp_path, env=_humble_env())
    try:
        publisher = probe.publisher(topic)
        detections, _ = probe.collect(Detection2DArray, f"/{name}/detections")
        wait_until_subscribed(probe, publisher, node)
        msg = image_msg(test_image(seed=3), probe.now(), frame_id="humble_cam")
        publish_until_answered(publisher, msg, detections)
        assert any(m.header == msg.header for _, m in detections), node.log()[-3000:]
    finally:
        code = node.stop(signal.SIGINT)
    log = node.log()
    assert code == 0, log[-3000:]
    assert "configured:" in log and "active: listening on" in log, log[-3000:]
    assert "Traceback" not in log and "Error in sitecustomize" not in log, log[-3000:]  # the view did load


@pytest.mark.slow
def test_pure_ros_tests_pass_on_humbles_rclpy():
    """The message, codec, depth, worker and model-loading tests (no DDS traffic) under the Humble view."""
    tests = ["test/ros/test_messages.py", "test/ros/test_image_codec.py", "test/ros/test_depth.py",
             "test/ros/test_worker.py", "test/ros/test_model_loader.py"]
    runner = ("import os, sys, pytest\n"
              "assert os.environ.get('SEMSEG_HUMBLE_VIEW') == '1', 'the Humble view is not active'\n"
              f"sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', *{tests!r}]))")
    run = subprocess.run([sys.executable, "-c", runner], cwd=REPO, env={**os.environ, **_humble_env()},
                         capture_output=True, text=True, timeout=280)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert " passed" in run.stdout, run.stdout[-2000:]
