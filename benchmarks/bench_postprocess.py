"""Post-processing time per frame: the raw output at the node's thresholds vs the instance map (the node's default).

    .venv/bin/python benchmarks/bench_postprocess.py                      # embedded model, 60 demo scenes, CPU
    .venv/bin/python benchmarks/bench_postprocess.py --device cuda --image-size 640

The model runs once per frame (not timed); each output then post-processes the same detections, masks=False as the
node asks (only the label image and the per-instance values leave the device). Medians over --repeats passes, with
torch.cuda.synchronize() around each timed call on a GPU.
"""
import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time

import cv2
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from semseg_core import Predictor  # noqa: E402
from semseg_core.data.synthetic import generate_dataset  # noqa: E402
from semseg_core.postprocess import PLANNER_DEFAULTS  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--image-size", type=int, default=256, help="side of the synthetic scenes (default 256)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    predictor = Predictor(device=args.device)
    outputs = {"raw (node thresholds)": dataclasses.replace(PLANNER_DEFAULTS, output="raw"),
               "instance_map": PLANNER_DEFAULTS}
    with tempfile.TemporaryDirectory() as folder:
        generate_dataset(folder, args.frames, seed=2024, image_size=args.image_size, split="test", progress=False)
        images = sorted(os.listdir(os.path.join(folder, "images")))
        raws = [predictor.raw_outputs([cv2.imread(os.path.join(folder, "images", name))], color="bgr")[0]
                for name in images]
    sync = torch.cuda.synchronize if predictor.device.type == "cuda" else (lambda: None)
    print(f"{len(raws)} frames of {args.image_size}x{args.image_size}, device {predictor.device}, "
          f"{sum(len(r.output['scores']) for r in raws) / len(raws):.1f} raw detections a frame")
    for name, options in outputs.items():
        for raw in raws[:5]:  # warm-up
            predictor.result_from(raw, options, masks=False)
        times = []
        for _ in range(args.repeats):
            for raw in raws:
                sync()
                start = time.perf_counter()
                predictor.result_from(raw, options, masks=False)
                sync()
                times.append(time.perf_counter() - start)
        print(f"{name:<24} median {statistics.median(times) * 1e3:7.2f} ms   "
              f"p90 {sorted(times)[int(0.9 * len(times))] * 1e3:7.2f} ms per frame")
    return 0


if __name__ == "__main__":
    sys.exit(main())
