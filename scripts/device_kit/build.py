#!/usr/bin/env python3
"""Build the device kit: one archive that installs semseg_ros offline on a Python 3.12 x86_64 machine
(the lent GPU machines: Python 3.12 with their own PyTorch, no package index), then measures it there.

    python3 scripts/device_kit/build.py                 # -> build/device_kit/semseg_device_kit.tar.xz
    python3 scripts/device_kit/build.py --no-model      # leave the embedded tiny model out (see below)
    make device-kit                                     # the same as the first line

What goes in (wheels for cp312 / manylinux x86_64; the index and a python3.12 with headers are needed HERE):
- the ROS 2 Jazzy wheels the node uses (rclpy with Fast DDS, std/sensor/geometry/diagnostic msgs) and their
  whole dependency closure, at the pins of requirements.txt / constraints.txt;
- the project's vision_msgs, compiled here for Python 3.12 (scripts/build_interfaces.sh in a 3.12 build
  environment) and packed as a wheel whose files land in the venv prefix (lib/, share/), like the ROS wheels;
- this package (a wheel of the tracked files of the working tree, as they are now), pycocotools, rosbags, mcap;
- install_and_measure.sh, the benchmarks/ scripts and config/ (the model YAMLs the measurements use).
Left out, because the machine's own Python has them (HOST_PROVIDED; --with-host-deps adds them, ~60 MB more):
torch, torchvision, numpy, opencv-python-headless, PyYAML, tqdm, setuptools, typing_extensions.
The wheels are re-zipped without compression so that xz compresses across them (~40% smaller than the
wheels as downloaded). The build stops with an error when the archive exceeds --max-mib (default 60).

--no-model leaves semseg_core/assets/*.pt (~22 MB compressed) out of the package wheel: for a run where the
archive travels next to a checkout of this repository (the device tool's 64 MiB limit covers the working tree,
which holds the model, and the carried archive together); install_and_measure.sh then copies the model from
the checkout it runs in. The GPU measurements use random weights and never need it; the demo does.

Work folders (reused by the next build; all git-ignored): build/device_kit/work/{buildenv312, wheels, ...}.
"""
import argparse
import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
KIT_NAME = "semseg_device_kit"
PYTHON_TAG = "cp312"
PLATFORM_TAGS = ("manylinux", "linux_x86_64", "none-any", "abi3")
# Provided by the GPU machine's own Python (its PyTorch image); not carried unless --with-host-deps.
HOST_PROVIDED = ("torch", "torchvision", "numpy", "opencv-python-headless", "pyyaml", "tqdm", "setuptools",
                 "typing-extensions")
# What the kit's environment imports beside the host-provided packages (top-level requirements; their
# dependency closure is resolved at the pins of constraints.txt).
KIT_TOP_LEVEL = ("ros-jazzy-rclpy[fastrtps]", "ros-jazzy-std-msgs", "ros-jazzy-sensor-msgs",
                 "ros-jazzy-geometry-msgs", "ros-jazzy-diagnostic-msgs", "pycocotools", "rosbags", "mcap")
VISION_MSGS_VERSION = "4.1.1"  # interfaces/vision_msgs/package.xml
KIT_FILES = ("scripts/device_kit/install_and_measure.sh",)
KIT_FOLDERS = ("benchmarks", "config")


class BuildError(RuntimeError):
    """A step of the kit build failed; the message says which and what to do."""


def log(message: str) -> None:
    print(f"==> {message}", flush=True)


# pip's line for each configured local index folder that does not exist on this machine: noise, not a problem
PIP_NOISE = re.compile(r"^WARNING: Location '.*' is ignored: it is neither a file nor a directory\.$")


def run(command, **kwargs) -> None:
    """A command whose failure stops the build with the command named (its output shown, less pip's noise)."""
    shown = " ".join(str(c) for c in command)
    process = subprocess.Popen([str(c) for c in command], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, **kwargs)
    for line in process.stdout:
        if not PIP_NOISE.match(line.rstrip("\n")):
            print(line, end="", flush=True)
    if process.wait() != 0:
        raise BuildError(f"command failed (exit {process.returncode}): {shown}")


def canonical(name: str) -> str:
    """PEP 503 normalised project name (what pip compares)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def wheel_name_version(filename: str):
    """(canonical name, version) of a wheel file name."""
    parts = Path(filename).name[:-len(".whl")].split("-")
    return canonical(parts[0]), parts[1]


def find_python312(explicit: str = "") -> str:
    """A Python 3.12 interpreter with its C headers (the vision_msgs build compiles against them)."""
    candidates = [explicit] if explicit else []
    candidates += [os.environ.get("SEMSEG_KIT_PYTHON", ""), shutil.which("python3.12") or ""]
    candidates += sorted(str(p) for p in Path.home().glob(".pyenv/versions/3.12*/bin/python3.12"))
    for candidate in [c for c in candidates if c]:
        probe = subprocess.run([candidate, "-c", "import sys, sysconfig, os; print('%d.%d' % sys.version_info[:2]); "
                                "print(os.path.isfile(os.path.join(sysconfig.get_paths()['include'], 'Python.h')))"],
                               capture_output=True, text=True)
        if probe.returncode == 0 and probe.stdout.split() == ["3.12", "True"]:
            return candidate
        if explicit:
            raise BuildError(f"--python {explicit} is not a Python 3.12 with headers (it said: "
                             f"{probe.stdout.strip() or probe.stderr.strip()})")
    raise BuildError("no Python 3.12 with C headers found (tried SEMSEG_KIT_PYTHON, python3.12 on PATH, "
                     "~/.pyenv/versions/3.12*); install one (apt-get install python3.12-dev python3.12-venv, "
                     "or 'pyenv install 3.12') or pass --python PATH")


def pinned_requirements():
    """{canonical name: 'name==version'} of every exact pin in requirements.txt and constraints.txt."""
    pins = {}
    for source in ("constraints.txt", "requirements.txt"):  # requirements.txt wins
        for line in (REPO / source).read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            match = re.match(r"^([A-Za-z0-9_.\-]+)(\[[^\]]*\])?==(\S+)$", line)
            if match:
                pins[canonical(match.group(1))] = f"{match.group(1)}=={match.group(3)}"
    return pins


def build_env(python312: str, work: Path) -> Path:
    """A Python 3.12 venv with the ROS build wheels (rosidl, ament_cmake), the msgs vision_msgs depends on
    and numpy: what scripts/build_interfaces.sh needs. Reused when it already imports them."""
    env = work / "buildenv312"
    py = env / "bin" / "python"
    check = [str(py), "-c", "import rosidl_adapter, ament_package, numpy, std_msgs.msg, geometry_msgs.msg"]
    if py.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        log(f"build environment {env} (reused)")
        return env
    log(f"build environment {env} (Python 3.12, rosidl + ament_cmake wheels)")
    run([python312, "-m", "venv", "--clear", env])
    pins = pinned_requirements()
    runtime = [line.split("#", 1)[0].strip() for line in (REPO / "requirements.txt").read_text().splitlines()]
    wanted = [r for r in runtime if r.startswith("ros-jazzy-")] + [pins["numpy"]]
    run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check", "-c", REPO / "constraints.txt",
         "-r", REPO / "requirements-build.txt"] + wanted)
    run(check)
    return env


def interface_sources_hash() -> str:
    """What the vision_msgs build is made from (the message files and the build script)."""
    digest = hashlib.sha256()
    for path in sorted([REPO / "scripts" / "build_interfaces.sh"] + list((REPO / "interfaces").rglob("*"))):
        if path.is_file():
            digest.update(path.relative_to(REPO).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def build_vision_msgs(env: Path, work: Path) -> Path:
    """Compile interfaces/vision_msgs for Python 3.12 into work/vision_msgs_prefix (a prefix of its own);
    reused while the sources are unchanged (a stamp written after a successful build)."""
    prefix, build = work / "vision_msgs_prefix", work / "vision_msgs_build"
    stamp = work / "vision_msgs_prefix.stamp"
    if stamp.is_file() and stamp.read_text() == interface_sources_hash() and prefix.is_dir():
        log(f"vision_msgs for Python 3.12 (reused: {prefix})")
        return prefix
    stamp.unlink(missing_ok=True)
    shutil.rmtree(prefix, ignore_errors=True)
    shutil.rmtree(build, ignore_errors=True)
    log("vision_msgs for Python 3.12 (scripts/build_interfaces.sh)")
    environ = dict(os.environ, SEMSEG_INTERFACE_PREFIX=str(prefix), SEMSEG_INTERFACE_BUILD_DIR=str(build))
    run(["bash", REPO / "scripts" / "build_interfaces.sh", env], env=environ)
    stamp.write_text(interface_sources_hash())
    return prefix


def _record_line(arcname: str, data: bytes) -> str:
    digest = hashlib.sha256(data).digest()
    return f"{arcname},sha256={base64.urlsafe_b64encode(digest).rstrip(b'=').decode()},{len(data)}"


def vision_msgs_wheel(prefix: Path, out_dir: Path) -> Path:
    """Pack the installed vision_msgs prefix as a wheel: the Python package at the top (purelib), the
    typesupport libraries and the ament share files under <name>.data/data/ (pip puts them in the venv
    prefix, where the ROS wheels put theirs: lib/ is on LD_LIBRARY_PATH through ros_wheels_bootstrapper).
    C/C++ headers and CMake files are for building against it and are left out."""
    name = f"vision_msgs-{VISION_MSGS_VERSION}"
    wheel_path = out_dir / f"{name}-{PYTHON_TAG}-{PYTHON_TAG}-linux_x86_64.whl"
    site = prefix / "lib" / "python3.12" / "site-packages"
    if not (site / "vision_msgs" / "__init__.py").is_file():
        raise BuildError(f"vision_msgs build left no Python package under {site}")
    entries = []
    for path in sorted((site / "vision_msgs").rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".c":
            entries.append((path.relative_to(site).as_posix(), path))
    for path in sorted(prefix.rglob("*")):
        rel = path.relative_to(prefix)
        if not path.is_file() or rel.parts[0] not in ("lib", "share") or "python3.12" in rel.parts:
            continue
        if rel.parts[0] == "share" and len(rel.parts) > 2 and rel.parts[2] == "cmake":
            continue
        entries.append((f"{name}.data/data/{rel.as_posix()}", path))
    dist_info = f"{name}.dist-info"
    metadata = (f"Metadata-Version: 2.1\nName: vision_msgs\nVersion: {VISION_MSGS_VERSION}\n"
                "Summary: vision_msgs (ROS 2 Jazzy) built by semseg_ros's device kit for CPython 3.12\n")
    wheel_meta = f"Wheel-Version: 1.0\nGenerator: semseg_ros device kit\nRoot-Is-Purelib: false\nTag: {PYTHON_TAG}-{PYTHON_TAG}-linux_x86_64\n"
    records = []
    with zipfile.ZipFile(wheel_path, "w", zipfile.ZIP_DEFLATED) as wheel:
        for arcname, path in entries:
            data = path.read_bytes()
            info = zipfile.ZipInfo(arcname, date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = (path.stat().st_mode & 0o777 | 0o100000) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            wheel.writestr(info, data)
            records.append(_record_line(arcname, data))
        for arcname, text in ((f"{dist_info}/METADATA", metadata), (f"{dist_info}/WHEEL", wheel_meta),
                              (f"{dist_info}/top_level.txt", "vision_msgs\n")):
            wheel.writestr(arcname, text)
            records.append(_record_line(arcname, text.encode()))
        records.append(f"{dist_info}/RECORD,,")
        wheel.writestr(f"{dist_info}/RECORD", "\n".join(records) + "\n")
    return wheel_path


def third_party_wheels(env: Path, work: Path, with_host_deps: bool) -> Path:
    """The kit's dependency closure as cp312 wheels (pip wheel in the 3.12 build env: binary wheels are
    fetched as they are, the few sdist-only pure-Python packages, e.g. empy, are built here)."""
    folder = work / "wheels"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    pins = pinned_requirements()
    top = []
    for requirement in KIT_TOP_LEVEL:
        base = canonical(requirement.split("[")[0])
        extra = requirement[len(requirement.split("[")[0]):]
        pin = pins.get(base)
        top.append(pin.replace("==", f"{extra}==", 1) if pin else requirement)
    log(f"third-party wheels for cp312 ({len(top)} requirements and their dependencies)")
    run([env / "bin" / "python", "-m", "pip", "wheel", "-q", "--disable-pip-version-check", "--prefer-binary",
         "-c", REPO / "constraints.txt", "-w", folder] + top)
    for wheel in sorted(folder.glob("*.whl")):
        name, _ = wheel_name_version(wheel.name)
        if name in HOST_PROVIDED and not with_host_deps:
            wheel.unlink()
    return folder


def package_wheel(env: Path, work: Path, with_model: bool) -> Path:
    """A wheel of this package built from the tracked files of the working tree (as they are on disk)."""
    source, out = work / "source", work / "package"
    for folder in (source, out):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    for rel in tracked.decode().split("\0"):
        if not rel or not (REPO / rel).is_file():
            continue
        if not with_model and rel.startswith("semseg_core/assets/") and rel.endswith(".pt"):
            continue
        (source / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, source / rel)
    log(f"semseg_ros wheel ({'with' if with_model else 'without'} the embedded model)")
    run([env / "bin" / "python", "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", "-w", out, source])
    wheels = list(out.glob("semseg_ros-*.whl"))
    if len(wheels) != 1:
        raise BuildError(f"expected one semseg_ros wheel in {out}, found {[w.name for w in wheels]}")
    return wheels[0]


def check_wheel_tags(wheels) -> None:
    """Every wheel must install on CPython 3.12 / manylinux x86_64 (a wrong tag fails only on the GPU)."""
    bad = []
    for wheel in wheels:
        stem = wheel.name[:-len(".whl")]
        python_tag, abi_tag, platform_tag = stem.split("-")[-3:]
        python_ok = any(t in ("py3", "py2.py3", PYTHON_TAG) or t.startswith("cp3") for t in python_tag.split("."))
        abi_ok = abi_tag in ("none", "abi3", PYTHON_TAG)
        platform_ok = platform_tag == "any" or "x86_64" in platform_tag
        too_new = abi_tag == "abi3" and python_tag.startswith("cp") and int(python_tag[2:]) > int(PYTHON_TAG[2:])
        if not (python_ok and abi_ok and platform_ok) or too_new:
            bad.append(wheel.name)
    if bad:
        raise BuildError(f"wheels that would not install on CPython 3.12 x86_64: {bad}")


def restore_uncompressed(source: Path, target: Path) -> None:
    """Copy a wheel with every member stored (no deflate): identical contents and RECORD, and xz then
    compresses across all wheels of the archive."""
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            copy = zipfile.ZipInfo(info.filename, date_time=info.date_time)
            copy.external_attr = info.external_attr
            copy.compress_type = zipfile.ZIP_STORED
            zout.writestr(copy, zin.read(info.filename))


def git_description() -> str:
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True,
                           text=True)
    return head.stdout.strip() + ("+uncommitted changes" if dirty.stdout.strip() else "")


def stage_and_pack(wheels, out: Path, work: Path, manifest: dict, max_mib: float, xz_level: int) -> Path:
    stage = work / "stage" / KIT_NAME
    shutil.rmtree(stage.parent, ignore_errors=True)
    (stage / "wheels").mkdir(parents=True)
    for wheel in wheels:
        restore_uncompressed(wheel, stage / "wheels" / wheel.name)
    lock = sorted("%s==%s" % wheel_name_version(w.name) for w in wheels)
    (stage / "requirements.lock").write_text("# every wheel of wheels/, exact (pip install --no-index)\n"
                                             + "\n".join(lock) + "\n")
    for rel in KIT_FILES:
        shutil.copy2(REPO / rel, stage / Path(rel).name)
    tracked = subprocess.run(["git", "ls-files", "-z", "--"] + list(KIT_FOLDERS), cwd=REPO, capture_output=True,
                             check=True).stdout.decode().split("\0")
    for rel in [r for r in tracked if r and (REPO / r).is_file() and not r.startswith("benchmarks/results/")]:
        (stage / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, stage / rel)
    manifest["wheels"] = {w.name: w.stat().st_size for w in wheels}
    (stage / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    log(f"packing {out} (xz -{xz_level}; about two minutes on 2 cores)")
    started = time.time()
    if shutil.which("tar") and shutil.which("xz"):  # multi-threaded xz; Python's lzma uses one core
        with open(partial, "wb") as sink:
            tar = subprocess.Popen(["tar", "-C", stage.parent, "--sort=name", "-cf", "-", KIT_NAME],
                                   stdout=subprocess.PIPE)
            xz = subprocess.run(["xz", "-T0", f"-{xz_level}", "-c"], stdin=tar.stdout, stdout=sink)
            tar.stdout.close()
            if tar.wait() != 0 or xz.returncode != 0:
                raise BuildError(f"tar | xz failed while packing {partial}")
    else:
        with tarfile.open(partial, "w:xz", preset=xz_level) as archive:
            archive.add(stage, arcname=KIT_NAME)
    size_mib = partial.stat().st_size / 2 ** 20
    log(f"packed in {time.time() - started:.0f} s: {size_mib:.1f} MiB")
    if size_mib > max_mib:
        partial.unlink()
        raise BuildError(f"the kit is {size_mib:.1f} MiB, over the {max_mib} MiB limit (--max-mib); "
                         "leave the model out (--no-model) or the host-provided wheels out (no --with-host-deps)")
    partial.replace(out)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(REPO / "build" / "device_kit" / f"{KIT_NAME}.tar.xz"))
    parser.add_argument("--work", default=str(REPO / "build" / "device_kit" / "work"))
    parser.add_argument("--python", default="", help="Python 3.12 with headers (default: found on this machine)")
    parser.add_argument("--no-model", action="store_true", help="leave the embedded tiny model out of the wheel")
    parser.add_argument("--with-host-deps", action="store_true",
                        help=f"also carry {', '.join(HOST_PROVIDED[2:])} (for a host without them)")
    parser.add_argument("--max-mib", type=float, default=60.0, help="largest archive accepted (default 60)")
    parser.add_argument("--xz-level", type=int, default=6, choices=range(0, 10))
    args = parser.parse_args(argv)
    started = time.time()
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    try:
        python312 = find_python312(args.python)
        log(f"Python 3.12: {python312}")
        env = build_env(python312, work)
        prefix = build_vision_msgs(env, work)
        folder = third_party_wheels(env, work, args.with_host_deps)
        wheels = sorted(folder.glob("*.whl"))
        wheels.append(vision_msgs_wheel(prefix, folder))
        wheels.append(package_wheel(env, work, not args.no_model))
        check_wheel_tags(wheels)
        manifest = {"kit": KIT_NAME, "built": time.strftime("%Y-%m-%d %H:%M:%S"), "source": git_description(),
                    "python": "3.12", "platform": "manylinux x86_64", "with_model": not args.no_model,
                    "host_provided": [] if args.with_host_deps else list(HOST_PROVIDED)}
        out = stage_and_pack(wheels, Path(args.out).resolve(), work, manifest, args.max_mib, args.xz_level)
    except BuildError as error:
        print(f"DEVICE KIT BUILD FAILED: {error}", file=sys.stderr)
        return 1
    log(f"device kit ready in {time.time() - started:.0f} s: {out} ({out.stat().st_size / 2 ** 20:.1f} MiB, "
        f"{len(wheels)} wheels)")
    log(f"on the GPU machine: bash install_and_measure.sh {out.name}   (or from this repo: "
        f"bash scripts/device_kit/install_and_measure.sh {os.path.relpath(out, REPO)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
