"""Host synchronisations per frame of the embedded model: torch.profiler counts of the ops that wait for the device.

    .venv/bin/python benchmarks/bench_host_syncs.py               # embedded model, 8 synthetic scenes, CPU
    .venv/bin/python benchmarks/bench_host_syncs.py --device cuda

Counted per frame over --frames synthetic scenes (after one warm-up frame): ``aten::nonzero`` (boolean indexing
and torch.nonzero: the output size is known only on the host) and ``aten::_local_scalar_dense`` (``.item()``,
``bool(tensor)``, ``.tolist()`` of a device tensor). On the CPU nothing waits, but each count is a sync on a GPU;
the count is the same on both.
"""
import argparse
import os
import sys
import tempfile

import cv2
import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from semseg_core import Predictor  # noqa: E402
from semseg_core.data.synthetic import generate_dataset  # noqa: E402

SYNC_OPS = ("aten::nonzero", "aten::_local_scalar_dense")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=256)
    args = parser.parse_args()
    torch.set_num_threads(1)
    predictor = Predictor(device=args.device)
    with tempfile.TemporaryDirectory() as folder:
        generate_dataset(folder, args.frames, seed=123, image_size=args.image_size, progress=False)
        names = sorted(os.listdir(os.path.join(folder, "images")))
        images = [cv2.imread(os.path.join(folder, "images", name))[:, :, ::-1].copy() for name in names]
    predictor(images[0])  # warm-up: lazy initialisation is not a per-frame cost
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        detections = [len(predictor(image)) for image in images]
    counts = {event.key: event.count for event in prof.key_averages() if event.key in SYNC_OPS}
    print(f"{len(images)} frames on {args.device}, detections per frame {detections}")
    for op in SYNC_OPS:
        print(f"{op}: {counts.get(op, 0) / len(images):.2f} per frame")
    return 0


if __name__ == "__main__":
    sys.exit(main())
