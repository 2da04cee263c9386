#!/usr/bin/env bash
# One-command set-up of semseg_ros on a machine without ROS or GPU (`make setup` runs this).
#
#   scripts/setup.sh           create or repair <repo>/.venv (Python 3.11): pinned PyTorch + ROS 2 Jazzy
#                              wheels, the project's own vision_msgs, this package (editable)
#   scripts/setup.sh --check   only say whether the environment is complete and current (exit 0 / 1)
#   scripts/setup.sh --force   redo every step even if the stamp says the environment is current
#
# Idempotent: a completed run writes a stamp (a hash of the requirement files, the interface sources
# and the set-up scripts) into the venv as its LAST action; the next run compares it, runs a quick
# import check, and stops in seconds. Any failure leaves no stamp, so the next run repairs the venv in
# place (nothing needs deleting by hand). Variables: SEMSEG_VENV (venv folder), SEMSEG_PYTHON
# (interpreter to build it from, default python3.11).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SEMSEG_VENV:-$ROOT/.venv}"
PYTHON="${SEMSEG_PYTHON:-python3.11}"
STAMP="$VENV/.semseg_setup_stamp"
INTERFACE_STAMP="$VENV/.semseg_vision_msgs_stamp"
MODE="${1:-setup}"
STEPS=7
START_S=$SECONDS

say() { echo "==> $*"; }
step() { echo "==> [$1/$STEPS] $2"; }
die() {  # die "what failed" "what to do" ...
  echo "" >&2
  echo "SET-UP FAILED: $1" >&2
  shift
  for line in "$@"; do echo "  $line" >&2; done
  echo "  The environment is marked incomplete; run 'make setup' again after fixing this (it repairs" >&2
  echo "  $VENV in place)." >&2
  exit 1
}

case "$MODE" in
  setup | --check | --force) ;;
  -h | --help) sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "usage: scripts/setup.sh [--check | --force]" >&2; exit 2 ;;
esac

# What the environment is made from; a change in any of these makes the next run do real work.
setup_hash() {
  (
    cd "$ROOT"
    { ls requirements*.txt constraints.txt setup.py setup.cfg package.xml scripts/setup.sh \
        scripts/build_interfaces.sh; find interfaces -type f | LC_ALL=C sort; } |
      while read -r f; do echo "$f"; cat "$f"; done
    [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import sys; print(sys.version)' 2>/dev/null || true
  ) | sha256sum | cut -d' ' -f1
}
interface_hash() {
  (cd "$ROOT" && find interfaces scripts/build_interfaces.sh -type f | LC_ALL=C sort |
    while read -r f; do echo "$f"; cat "$f"; done) | sha256sum | cut -d' ' -f1
}

# Quick proof that the environment works (a few seconds): imports and the lib/ link.
verify_environment() {
  [ -x "$VENV/bin/python" ] || return 1
  [ -e "$VENV/lib/semseg_ros/perception_node" ] || return 1
  "$VENV/bin/python" - <<'EOF' >/dev/null 2>&1
import importlib.util, sys
import semseg_ros  # noqa: F401
import rclpy, sensor_msgs.msg, vision_msgs.msg, rosbags, yaml, tqdm  # noqa: F401
for name in ("torch", "torchvision", "cv2", "pycocotools", "numpy"):
    if importlib.util.find_spec(name) is None:
        sys.exit(1)
vision_msgs.msg.Detection2DArray()
EOF
}

if [ "$MODE" != "--force" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(setup_hash)" ] &&
  verify_environment; then
  say "environment $VENV is complete and current (checked in $((SECONDS - START_S)) s)"
  exit 0
fi
if [ "$MODE" = "--check" ]; then
  if [ ! -f "$STAMP" ]; then echo "environment $VENV is not set up (no stamp): run 'make setup'" >&2
  elif [ "$(cat "$STAMP")" != "$(setup_hash)" ]; then echo "environment $VENV is out of date (requirements or interfaces changed): run 'make setup'" >&2
  else echo "environment $VENV is broken (imports fail): run 'make setup' to repair it" >&2; fi
  exit 1
fi

# From here on the environment is being changed: it is incomplete until the stamp is written again.
rm -f "$STAMP"

step 1 "Python 3.11 ($PYTHON)"
if ! command -v "$PYTHON" >/dev/null 2>&1; then
  die "'$PYTHON' not found on PATH; the project needs Python 3.11 (the ROS 2 Jazzy wheels are cp311)." \
    "Install it: apt-get install python3.11 python3.11-venv python3.11-dev  (Debian 12 / Ubuntu 24.04)," \
    "or 'pyenv install 3.11', or point SEMSEG_PYTHON at a Python 3.11 interpreter."
fi
PY_VERSION="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || echo unknown)"
[ "$PY_VERSION" = "3.11" ] || die "'$PYTHON' is Python $PY_VERSION, not 3.11." \
  "Point SEMSEG_PYTHON at a Python 3.11 interpreter (e.g. SEMSEG_PYTHON=/usr/bin/python3.11 make setup)."
"$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1 || die "'$PYTHON' lacks the venv/ensurepip modules." \
  "Install them: apt-get install python3.11-venv"
echo "    $("$PYTHON" -c 'import sys; print(sys.executable, sys.version.split()[0])')"

step 2 "build tools (cmake, g++, make) for the vision_msgs interface build"
missing=()
for tool in cmake g++ make; do command -v "$tool" >/dev/null 2>&1 || missing+=("$tool"); done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "    installing ${missing[*]} with apt-get (running as root)"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cmake g++ make; } ||
      die "apt-get could not install cmake g++ make." "Install them yourself, then run 'make setup' again."
  else
    die "missing build tools: ${missing[*]} (needed to build the vision_msgs messages)." \
      "Install them: sudo apt-get install cmake g++ make   then run 'make setup' again."
  fi
fi
echo "    $(cmake --version | head -n1), $(g++ --version | head -n1)"

step 3 "virtual environment $VENV"
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import sys; assert sys.version_info[:2] == (3, 11)' 2>/dev/null; then
  echo "    adopting the existing venv"
else
  if [ -e "$VENV" ]; then echo "    $VENV exists but has no working Python 3.11: recreating it"; fi
  "$PYTHON" -m venv --clear "$VENV" || die "could not create the virtual environment $VENV." \
    "Check free disk space and write permission on $(dirname "$VENV")."
fi
PIP=("$VENV/bin/python" -m pip)
# pip without the machine-config noise (one "Location ... is ignored" line per package for index
# folders that do not exist); pip's own exit status is kept (pipefail).
pip_quiet() {
  "${PIP[@]}" "$@" 2>&1 | { grep -v -E "^WARNING: Location '.*' is ignored: it is neither a file nor a directory\.$" || true; }
}

step 4 "pinned Python packages (PyTorch, ROS 2 Jazzy wheels, tools; ~5 GB on a fresh machine)"
pip_quiet install --disable-pip-version-check -q -c "$ROOT/constraints.txt" \
  -r "$ROOT/requirements.txt" -r "$ROOT/requirements-build.txt" ||
  die "pip could not install the pinned requirements (see pip's message above)." \
    "Check the package index / network, then run 'make setup' again."
"${PIP[@]}" check >/dev/null || die "the installed packages have conflicting requirements ('$VENV/bin/python -m pip check')." \
  "Run 'make setup --force' after fixing requirements.txt / constraints.txt."

step 5 "vision_msgs (interfaces/vision_msgs -> $VENV)"
if [ -f "$INTERFACE_STAMP" ] && [ "$(cat "$INTERFACE_STAMP")" = "$(interface_hash)" ] &&
  "$VENV/bin/python" -c 'from vision_msgs.msg import Detection2DArray; Detection2DArray()' >/dev/null 2>&1; then
  echo "    already built from the current sources"
else
  rm -f "$INTERFACE_STAMP"
  "$ROOT/scripts/build_interfaces.sh" "$VENV" || die "the vision_msgs interface build failed (message above)." \
    "Fix the cause shown above, then run 'make setup' again."
  interface_hash >"$INTERFACE_STAMP"
fi

step 6 "semseg_ros (editable install + ROS package index entries)"
pip_quiet install --disable-pip-version-check -q --no-deps --no-build-isolation -e "$ROOT" ||
  die "pip could not install this package (pip -e $ROOT)." "See pip's message above."
# An editable install leaves out data_files; link what ROS tooling looks up under the prefix:
# launch_ros runs $prefix/lib/<pkg>/<exe>; ament_index finds the package by its resource marker.
mkdir -p "$VENV/lib/semseg_ros" "$VENV/share/ament_index/resource_index/packages" "$VENV/share/semseg_ros"
ln -sfn "$VENV/bin/perception_node" "$VENV/lib/semseg_ros/perception_node"
ln -sfn "$ROOT/resource/semseg_ros" "$VENV/share/ament_index/resource_index/packages/semseg_ros"
for item in package.xml launch config; do ln -sfn "$ROOT/$item" "$VENV/share/semseg_ros/$item"; done

step 7 "self-check (rclpy + Fast DDS profile + vision_msgs)"
"$VENV/bin/semseg-env" --check | sed 's/^/    /' || die "the self-check failed (lines marked FAIL above)."
verify_environment || die "the environment does not import (torch, torchvision, cv2, pycocotools, rclpy, vision_msgs)." \
  "Run '$VENV/bin/python -c \"import torch, rclpy, vision_msgs.msg\"' to see the error."

setup_hash >"$STAMP"
say "set-up complete in $((SECONDS - START_S)) s: $VENV ($(du -sh "$VENV" 2>/dev/null | cut -f1))"
say "next: 'make test' runs the tests; '$VENV/bin/semseg-env --check' re-checks ROS"
