#!/usr/bin/env bash
# Prove the device kit on this CPU machine, as it will run on a GPU machine: build the kit, then install it
# offline into a venv on top of a "host" Python 3.12 that holds torch the way the GPU image does
# (a venv of its own with torch, torchvision, numpy, opencv, PyYAML, tqdm), then run the node (the
# measurement script's CPU dry run) and the demo from the kit's venv.
#
#   bash scripts/device_kit/prove_here.sh            # ~10 min on the 2-core machine (first run: +1 min download)
#
# The host venv is made once under $PROOF (default /tmp/semseg_kit_proof): torch 2.14.1 and torchvision 0.29.1
# cp312 wheels from the index with --no-deps (~560 MB), their CUDA libraries linked from the project's .venv
# (same torch pin, Python-independent wheels) instead of downloading 3 GB again. Needs `make setup` done.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PROOF="${PROOF:-/tmp/semseg_kit_proof}"
VENV311="${SEMSEG_VENV:-$ROOT/.venv}"  # the project venv (make setup; same variable as scripts/setup.sh)
HOST="$PROOF/host312"
START_S=$SECONDS
say() { echo "==> [$((SECONDS - START_S)) s] $*"; }

PY312="$(python3 -c 'import importlib.util, sys
spec = importlib.util.spec_from_file_location("b", sys.argv[1]); m = importlib.util.module_from_spec(spec)
spec.loader.exec_module(m); print(m.find_python312())' "$ROOT/scripts/device_kit/build.py")"
mkdir -p "$PROOF"
if ! OMP_NUM_THREADS=1 "$HOST/bin/python" -c 'import torch, torchvision, cv2, numpy, yaml, tqdm' 2>/dev/null; then
  say "host Python 3.12 with torch (like the GPU image's /opt/torch/.venv): $HOST"
  [ -d "$VENV311/lib/python3.11/site-packages/nvidia" ] || { echo "run 'make setup' first (its torch CUDA libraries are reused)" >&2; exit 1; }
  rm -rf "$HOST"
  "$PY312" -m venv "$HOST"
  pins() { grep -E "^($1)==" "$ROOT/constraints.txt" | tr '\n' ' '; }
  "$VENV311/bin/python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --abi cp312 --platform manylinux_2_28_x86_64 -d "$PROOF/torch312" $(pins 'torch|torchvision')
  "$HOST/bin/python" -m pip install -q --no-deps "$PROOF"/torch312/*.whl
  "$HOST/bin/python" -m pip install -q $(pins 'numpy|opencv-python-headless|PyYAML|tqdm|setuptools|typing_extensions|filelock|sympy|networkx|Jinja2|fsspec|pillow|matplotlib')
  ln -sfn "$VENV311/lib/python3.11/site-packages/nvidia" "$HOST/lib/python3.12/site-packages/nvidia"
fi

say "building the kit (make device-kit)"
python3 "$ROOT/scripts/device_kit/build.py"
KIT="$ROOT/build/device_kit/semseg_device_kit.tar.xz"

say "installing it offline on top of $HOST, then the node through the measurement script's CPU dry run"
mkdir -p "$PROOF/out"
(cd "$ROOT" && OUT="$PROOF/out" OMP_NUM_THREADS=1 bash scripts/device_kit/install_and_measure.sh \
  --python "$HOST/bin/python" --work "$PROOF/kit" --cpu-check "$KIT")

say "the demo from the kit's venv (run outside the checkout, so nothing is imported from it)"
rm -rf "$PROOF/demo"
(cd /tmp && OMP_NUM_THREADS=1 "$PROOF/kit/venv/bin/semseg-demo" --short --out "$PROOF/demo")
cd /tmp && "$PROOF/kit/venv/bin/python" - "$PROOF/kit/venv" <<'EOF'
import os, sys
import semseg_ros, torch
assert semseg_ros.__file__.startswith(sys.argv[1]), f"semseg_ros imported from {semseg_ros.__file__}, not the kit"
print(f"    semseg_ros from {os.path.dirname(semseg_ros.__file__)}; torch {torch.__version__} from {os.path.dirname(torch.__file__)}")
EOF
say "proof done: kit $(du -h "$KIT" | cut -f1), results in $PROOF/out, demo in $PROOF/demo"
