"""Memory: peak resident set size (and peak GPU memory on CUDA) of inference, one fresh process per variant.

    .venv/bin/python benchmarks/bench_memory.py                          # 640x480, tiny/tiny_fast/r50/r50_fast/tv
    .venv/bin/python benchmarks/bench_memory.py --size 800x1333 --variants r50,r50_fast,tv --device cuda

Each variant runs in its own child process (peak RSS is per process and never goes down): import torch,
build the model with random weights (variants and the fixed-detection mode as in bench_model_inference.py),
run 3 frames. Reported: RSS after imports, after building, and the peak; on CUDA also
torch.cuda.max_memory_allocated / max_memory_reserved.
"""
import argparse
import json
import os
import subprocess
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench_model_inference import build_variant, test_image  # noqa: E402
from common import emit, machine, peak_rss_mb  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def child(variant, size, device, fixed, threads) -> dict:
    torch.set_num_threads(threads)
    after_import = rss_mb()
    width, height = (int(v) for v in size.split("x"))
    image = test_image(width, height)
    model, run = build_variant(variant, device=device, fixed=fixed)
    after_build = rss_mb()
    for _ in range(3):
        detections = run(image)
    out = {"rss_after_import_mb": round(after_import, 1), "rss_after_build_mb": round(after_build, 1),
           "peak_rss_mb": round(peak_rss_mb(), 1), "detections": detections}
    if device.startswith("cuda"):
        out["peak_gpu_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 2 ** 20, 1)
        out["peak_gpu_reserved_mb"] = round(torch.cuda.max_memory_reserved() / 2 ** 20, 1)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default="tiny,tiny_fast,r50,r50_fast,tv")
    parser.add_argument("--size", default="640x480", help="WxH")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--num-detections", type=int, default=50, help="fixed detections per frame (0: thresholds)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json-out", default=None)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    fixed = args.num_detections or None
    if args.child:
        print(json.dumps(child(args.child, args.size, args.device, fixed, args.threads)))
        return 0
    results = {}
    for variant in [v for v in args.variants.split(",") if v]:
        command = [sys.executable, os.path.abspath(__file__), "--child", variant, "--size", args.size,
                   "--device", args.device, "--num-detections", str(args.num_detections), "--threads",
                   str(args.threads)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{variant} failed:\n{done.stderr[-2000:]}")
        results[variant] = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"  {variant:10s} {results[variant]}", file=sys.stderr)
    emit({"benchmark": "memory", "machine": machine(args.threads, args.device), "size": args.size,
          "detections": f"fixed {fixed}" if fixed else "default thresholds", "variants": results}, args.json_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
