#!/usr/bin/env bash
# Install the device kit (scripts/device_kit/build.py) offline into a venv that reuses this machine's own
# PyTorch, then run every GPU measurement (benchmarks/gpu_node.py). For a Python 3.12 x86_64 machine
# without a package index (the lent GPU machines).
#
#   bash install_and_measure.sh KIT.tar.xz                  install, self-check, measure (results in $OUT or .)
#   bash install_and_measure.sh --install-only KIT.tar.xz   install and self-check only
#   bash install_and_measure.sh KIT.tar.xz -- --only r50_fast   arguments after -- go to gpu_node.py
#
# Options: --python PY (the machine's Python 3.12 that holds torch; default python3), --venv DIR (default
# /tmp/semseg_kit/venv), --work DIR (where the kit is unpacked; default /tmp/semseg_kit), --cpu-check (run
# the measurement script's CPU dry run instead of the GPU measurements: proves the kit on a machine
# without a GPU). The venv sees the machine's site-packages after its own (torch, torchvision, numpy,
# cv2, yaml, tqdm come from there); the kit's wheels are installed with pip --no-index.
set -euo pipefail

PYTHON=python3
WORK=/tmp/semseg_kit
VENV=""
MODE=measure
KIT=""
MEASURE_ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --python) PYTHON="$2"; shift 2 ;;
    --venv) VENV="$2"; shift 2 ;;
    --work) WORK="$2"; shift 2 ;;
    --install-only) MODE=install; shift ;;
    --cpu-check) MODE=cpu-check; shift ;;
    --) shift; MEASURE_ARGS=("$@"); break ;;
    -h | --help) sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
    *) KIT="$1"; shift ;;
  esac
done
VENV="${VENV:-$WORK/venv}"
RESULTS="${OUT:-$PWD}"
START_S=$SECONDS
say() { echo "==> [$((SECONDS - START_S)) s] $*"; }
die() { echo "KIT INSTALL FAILED: $1" >&2; shift; for line in "$@"; do echo "  $line" >&2; done; exit 1; }

[ -n "$KIT" ] || die "no kit archive given" "usage: bash install_and_measure.sh [--install-only] KIT.tar.xz"
[ -f "$KIT" ] || die "kit archive $KIT not found" "build it with 'make device-kit' (build/device_kit/)"
command -v "$PYTHON" >/dev/null 2>&1 || die "'$PYTHON' not found" "pass --python /path/to/python3.12"
version="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
[ "$version" = "3.12" ] || die "'$PYTHON' is Python $version; the kit's wheels are for CPython 3.12" \
  "pass --python with a Python 3.12 that has torch installed"

say "unpacking $KIT into $WORK"
rm -rf "$WORK/semseg_device_kit"
mkdir -p "$WORK"
tar -xJf "$KIT" -C "$WORK" 2>/dev/null || "$PYTHON" -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$KIT" "$WORK" ||
  die "could not unpack $KIT (tar -xJ and Python's tarfile both failed)"
DIR="$WORK/semseg_device_kit"
"$PYTHON" -c 'import json, sys; m = json.load(open(sys.argv[1])); print("    kit built", m["built"], "from", m["source"], "| model inside:", m["with_model"])' "$DIR/manifest.json"

say "checking what the kit takes from this machine's Python ($PYTHON)"
"$PYTHON" - "$DIR/manifest.json" <<'EOF' || die "this machine's Python lacks packages the kit does not carry (above)" \
  "install them into $PYTHON, or rebuild the kit with: python3 scripts/device_kit/build.py --with-host-deps"
import importlib, json, sys
modules = {"torch": "torch", "torchvision": "torchvision", "numpy": "numpy", "opencv-python-headless": "cv2",
           "pyyaml": "yaml", "tqdm": "tqdm", "setuptools": "setuptools", "typing-extensions": "typing_extensions"}
missing = []
for name in json.load(open(sys.argv[1]))["host_provided"]:
    try:
        module = importlib.import_module(modules[name])
        print(f"    {name}: {getattr(module, '__version__', 'present')}")
    except Exception as error:  # an import that fails for any reason is as good as missing
        missing.append(f"{name} ({type(error).__name__}: {error})")
if missing:
    print("    missing: " + ", ".join(missing), file=sys.stderr)
    sys.exit(1)
EOF

say "virtual environment $VENV (reusing $PYTHON's site-packages)"
rm -rf "$VENV"
"$PYTHON" -m venv --without-pip --system-site-packages "$VENV" || die "could not create $VENV"
SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
# --system-site-packages reaches the BASE interpreter's packages; when $PYTHON is itself a venv (the GPU
# image's /opt/torch/.venv), its own site-packages must be added too. addsitedir also runs its .pth files.
"$PYTHON" -c 'import site, sys; print("import site; " + "; ".join("site.addsitedir(%r)" % p for p in site.getsitepackages()))' \
  >"$SITE/_semseg_host_site_packages.pth"
"$VENV/bin/python" -m pip --version >/dev/null 2>&1 || die "pip is not importable from $PYTHON's site-packages" \
  "install pip into $PYTHON (python3 -m ensurepip), then run this again"

say "installing $(grep -c '==' "$DIR/requirements.lock") wheels offline"
"$VENV/bin/python" -m pip install -q --no-index --no-cache-dir --disable-pip-version-check --no-compile \
  --find-links "$DIR/wheels" -r "$DIR/requirements.lock" || die "pip could not install the kit (message above)"
ASSET="semseg_core/assets/semseg_tiny_synthetic.pt"
INSTALLED_ASSET="$SITE/$ASSET"
if [ ! -f "$INSTALLED_ASSET" ] && [ -f "$PWD/$ASSET" ]; then  # a --no-model kit run from a checkout
  mkdir -p "$(dirname "$INSTALLED_ASSET")" && cp "$PWD/$ASSET" "$INSTALLED_ASSET"
  echo "    embedded model copied from the checkout ($ASSET)"
fi

say "self-check (rclpy + Fast DDS + vision_msgs + torch from the host)"
(cd /tmp && "$VENV/bin/semseg-env" --check | sed 's/^/    /') || die "the kit's self-check failed (lines marked FAIL above)"
(cd /tmp && "$VENV/bin/python" -c 'import torch, semseg_ros, semseg_core, vision_msgs.msg
print("    torch", torch.__version__, "from", torch.__file__, "| CUDA:", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")') || die "torch or the package does not import in $VENV"
say "installed: $VENV ($(du -sh "$VENV" | cut -f1))"

case "$MODE" in
  install) exit 0 ;;
  cpu-check)
    say "measurement script, CPU dry run"
    (cd "$DIR" && "$VENV/bin/python" benchmarks/gpu_node.py --dry-run-cpu --out "$RESULTS/gpu_node_dry_run.json" \
      ${MEASURE_ARGS[@]+"${MEASURE_ARGS[@]}"}) ;;
  measure)
    say "GPU measurements (benchmarks/gpu_node.py; results saved after each step in $RESULTS)"
    (cd "$DIR" && "$VENV/bin/python" benchmarks/gpu_node.py --out "$RESULTS/gpu_node.json" \
      ${MEASURE_ARGS[@]+"${MEASURE_ARGS[@]}"}) ;;
esac
say "done"
