"""The device kit's pieces (scripts/device_kit/): fast, offline checks. The whole kit (download, build, install
into a Python 3.12 venv, node + demo from it) is proven by the command in README.md ("Device kit"); it needs
the package index and a few minutes, so CI runs only these."""
import base64
import hashlib
import importlib.util
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
KIT_DIR = REPO / "scripts" / "device_kit"
INSTALL = KIT_DIR / "install_and_measure.sh"


def load_build_module():
    spec = importlib.util.spec_from_file_location("device_kit_build", KIT_DIR / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build = load_build_module()


def fake_prefix(root: Path) -> Path:
    """An install prefix shaped like the one scripts/build_interfaces.sh leaves (a few files of each kind)."""
    prefix = root / "prefix"
    package = prefix / "lib" / "python3.12" / "site-packages" / "vision_msgs"
    (package / "msg").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "msg" / "__init__.py").write_text("VALUE = 42\n")
    (package / "_vision_msgs_s.ep.rosidl_typesupport_c.c").write_text("/* build intermediate */")
    (package / "__pycache__").mkdir()
    (package / "__pycache__" / "x.pyc").write_bytes(b"\0")
    (prefix / "lib" / "libvision_msgs__rosidl_generator_c.so").write_bytes(b"\x7fELF fake library")
    (prefix / "share" / "vision_msgs" / "msg").mkdir(parents=True)
    (prefix / "share" / "vision_msgs" / "msg" / "Detection2D.msg").write_text("string id\n")
    (prefix / "share" / "vision_msgs" / "cmake").mkdir()
    (prefix / "share" / "vision_msgs" / "cmake" / "x.cmake").write_text("# for builds against it")
    marker = prefix / "share" / "ament_index" / "resource_index" / "packages"
    marker.mkdir(parents=True)
    (marker / "vision_msgs").write_text("")
    (prefix / "include" / "vision_msgs").mkdir(parents=True)
    (prefix / "include" / "vision_msgs" / "x.h").write_text("/* header */")
    return prefix


def test_vision_msgs_wheel_layout_and_record(tmp_path):
    wheel = build.vision_msgs_wheel(fake_prefix(tmp_path), tmp_path)
    assert wheel.name == "vision_msgs-4.1.1-cp312-cp312-linux_x86_64.whl"
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        data = "vision_msgs-4.1.1.data/data/"
        assert {"vision_msgs/__init__.py", "vision_msgs/msg/__init__.py",
                data + "lib/libvision_msgs__rosidl_generator_c.so", data + "share/vision_msgs/msg/Detection2D.msg",
                data + "share/ament_index/resource_index/packages/vision_msgs"} <= names
        # build intermediates, byte code, headers and CMake files stay out
        assert not [n for n in names if n.endswith((".c", ".pyc", ".h", ".cmake"))]
        record = archive.read("vision_msgs-4.1.1.dist-info/RECORD").decode().splitlines()
        listed = {line.split(",")[0] for line in record}
        assert listed == names
        for line in record:
            name, digest, size = line.split(",")
            if name.endswith("RECORD"):
                continue
            content = archive.read(name)
            expected = base64.urlsafe_b64encode(hashlib.sha256(content).digest()).rstrip(b"=").decode()
            assert digest == f"sha256={expected}" and int(size) == len(content)
        assert "Tag: cp312-cp312-linux_x86_64" in archive.read("vision_msgs-4.1.1.dist-info/WHEEL").decode()


def test_vision_msgs_wheel_installs_into_the_prefix_with_pip(tmp_path):
    """Real pip (offline, a Python 3.12's: the wheel is cp312) puts the package in site-packages and lib/ +
    share/ under the prefix, where ros_wheels_bootstrapper and ament_index look."""
    try:
        python312 = build.find_python312()
    except build.BuildError:
        pytest.skip("no Python 3.12 on this machine")
    wheel = build.vision_msgs_wheel(fake_prefix(tmp_path), tmp_path)
    target = tmp_path / "root"
    done = subprocess.run([python312, "-m", "pip", "install", "--no-index", "--no-deps", "--no-compile",
                           "--disable-pip-version-check", "--prefix", str(target), str(wheel)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (target / "lib" / "libvision_msgs__rosidl_generator_c.so").read_bytes() == b"\x7fELF fake library"
    assert (target / "share" / "ament_index" / "resource_index" / "packages" / "vision_msgs").is_file()
    site = target / "lib" / "python3.12" / "site-packages"
    assert (site / "vision_msgs" / "msg" / "__init__.py").read_text() == "VALUE = 42\n"
    assert not (target / "include").exists()


def test_wheel_tags_are_checked(tmp_path):
    good = ["ros_rcl-9.2.8-cp312-cp312-manylinux_2_28_x86_64.whl", "empy-4.2.1-py3-none-any.whl",
            "opencv_python_headless-5.0.0.93-cp37-abi3-manylinux_2_28_x86_64.whl",
            "lz4-4.4.5-cp312-cp312-manylinux2014_x86_64.manylinux_2_17_x86_64.manylinux_2_28_x86_64.whl"]
    build.check_wheel_tags([tmp_path / n for n in good])
    for bad in ("ros_rcl-9.2.8-cp311-cp311-manylinux_2_28_x86_64.whl",
                "ros_rcl-9.2.8-cp312-cp312-manylinux_2_28_aarch64.whl",
                "future_thing-1.0-cp313-abi3-manylinux_2_28_x86_64.whl"):
        with pytest.raises(build.BuildError, match=bad.split("-")[0]):
            build.check_wheel_tags([tmp_path / bad])


def test_uncompressed_copy_keeps_every_member(tmp_path):
    source = tmp_path / "a-1.0-py3-none-any.whl"
    with zipfile.ZipFile(source, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("a/__init__.py", "x = 1\n" * 1000)
        archive.writestr("a-1.0.dist-info/RECORD", "a/__init__.py,,\n")
    target = tmp_path / "copy.whl"
    build.restore_uncompressed(source, target)
    with zipfile.ZipFile(source) as a, zipfile.ZipFile(target) as b:
        assert [i.filename for i in a.infolist()] == [i.filename for i in b.infolist()]
        assert all(i.compress_type == zipfile.ZIP_STORED for i in b.infolist())
        assert all(a.read(n) == b.read(n) for n in a.namelist())


def test_kit_pins_come_from_the_project_requirements():
    pins = build.pinned_requirements()
    # the exact lines of requirements.txt (the 3.11 set-up) are what the kit downloads for 3.12
    text = (REPO / "requirements.txt").read_text()
    for name in ("ros-jazzy-rclpy", "ros-jazzy-sensor-msgs", "pycocotools", "rosbags", "mcap"):
        line = next(l for l in text.splitlines() if l.startswith(name + "==") or l.startswith(name + "["))
        version = line.split("==")[1].split()[0]
        assert pins[build.canonical(name)].endswith("==" + version)
    for requirement in build.KIT_TOP_LEVEL:
        assert build.canonical(requirement.split("[")[0]) in pins, requirement


def run_install(*args, env=None):
    return subprocess.run(["bash", str(INSTALL), *args], capture_output=True, text=True, cwd=str(REPO),
                          env=dict(os.environ, **(env or {})))


def test_install_script_rejects_a_missing_archive_and_a_wrong_python(tmp_path):
    done = run_install(str(tmp_path / "nothing.tar.xz"))
    assert done.returncode == 1 and "nothing.tar.xz not found" in done.stderr
    archive = tmp_path / "kit.tar.xz"
    with tarfile.open(archive, "w:xz"):
        pass
    if sys.version_info[:2] != (3, 12):
        done = run_install("--python", sys.executable, str(archive))
        assert done.returncode == 1
        assert f"is Python {sys.version_info[0]}.{sys.version_info[1]}" in done.stderr and "3.12" in done.stderr
    done = run_install("--bogus", str(archive))
    assert done.returncode == 2 and "unknown option --bogus" in done.stderr


def test_install_script_names_missing_host_packages(tmp_path):
    """A kit whose manifest expects a host package that the machine's Python lacks stops before any install."""
    python312 = None
    try:
        python312 = build.find_python312()
    except build.BuildError:
        pytest.skip("no Python 3.12 on this machine")
    kit = tmp_path / "stage" / build.KIT_NAME
    (kit / "wheels").mkdir(parents=True)
    (kit / "requirements.lock").write_text("")
    (kit / "manifest.json").write_text('{"built": "now", "source": "test", "with_model": false, '
                                       '"host_provided": ["torch"]}')
    archive = tmp_path / "kit.tar.xz"
    with tarfile.open(archive, "w:xz") as out:
        out.add(kit, arcname=build.KIT_NAME)
    done = run_install("--python", python312, "--work", str(tmp_path / "work"), "--install-only", str(archive),
                       env={"PYTHONNOUSERSITE": "1"})
    if done.returncode == 0:
        pytest.skip(f"{python312} has torch: nothing is missing here")
    assert done.returncode == 1
    assert "torch (ModuleNotFoundError" in done.stderr and "--with-host-deps" in done.stderr
    assert not (tmp_path / "work" / "venv").exists()


def test_gpu_script_covers_every_measurement_of_the_issue():
    """The default step list of benchmarks/gpu_node.py parses and holds, through the node, R50 faithful and fast
    at 640x480 and 1280x720 in fp32 and bf16, the compile switch on and off side by side, and a profile step
    (busy share, peak memory): a typo there would only show on a rare GPU lease."""
    spec = importlib.util.spec_from_file_location("gpu_node", REPO / "benchmarks" / "gpu_node.py")
    gpu_node = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_node)
    steps = [gpu_node.Step(text) for text in gpu_node.DEFAULT_STEPS]
    node = {(s.config, f"{s.width}x{s.height}", s.precision) for s in steps if s.kind == "node"}
    for config in ("r50", "r50_fast"):
        for size in ("640x480", "1280x720"):
            for precision in ("fp32", "bf16"):
                assert (config, size, precision) in node
    same = [(s.config, s.width, s.precision) for s in steps if s.kind == "node" and s.compile == "eager"]
    assert any((s.config, s.width, s.precision) in same for s in steps if s.kind == "node" and s.compile == "compiled")
    assert any(s.kind == "profile" for s in steps)
    assert len(set(gpu_node.DEFAULT_STEPS)) == len(gpu_node.DEFAULT_STEPS)
    with pytest.raises(ValueError, match="bad step 'node:r50:640x480:fp64:compiled'"):
        gpu_node.Step("node:r50:640x480:fp64:compiled")


def test_install_script_is_valid_bash():
    assert subprocess.run(["bash", "-n", str(INSTALL)]).returncode == 0
