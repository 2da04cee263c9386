"""Where one frame's time goes on a GPU: torch.profiler over the stock Predictor (R50 fast config, random weights,
fixed 50 detections), to tell GPU-bound from launch/host-bound and to rank the host-side costs.

    python benchmarks/gpu_profile.py --out gpu_profile.json          # ~1 min on one H100/H200
    python benchmarks/gpu_profile.py --device cpu --size 160x120     # checks the script itself

Prints and writes: wall ms per frame, summed GPU kernel ms per frame (device busy share = kernel / wall),
number of kernel launches per frame, and the top operators by self host time and by GPU time.
"""
import argparse
import json
import os
import sys
import time
import warnings

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_model_inference import build_variant, test_image  # noqa: E402
from common import machine  # noqa: E402


def top(events, key, n):
    rows = sorted(events, key=lambda e: getattr(e, key), reverse=True)[:n]
    return [{"op": e.key, "calls": e.count, "ms_total": round(getattr(e, key) / 1000, 3)} for e in rows]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", default="r50_fast")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--amp", default=None, choices=[None, "fp16", "bf16"])
    parser.add_argument("--size", default="640x480", help="WxH")
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--out", default=os.path.join(os.environ.get("OUT", "."), "gpu_profile.json"))
    args = parser.parse_args(argv)
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        print("gpu_profile.py: CUDA is not available here; use --device cpu to check the script", file=sys.stderr)
        return 2
    if cuda:
        torch.backends.cudnn.benchmark = True
    width, height = (int(v) for v in args.size.lower().split("x"))
    image = test_image(width, height)
    warnings.simplefilter("ignore", UserWarning)
    _, run = build_variant(args.variant, device=args.device, amp=args.amp, fixed=50)
    for _ in range(5):
        run(image)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    sync()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        for _ in range(args.frames):
            run(image)
        sync()
        wall = (time.perf_counter() - start) / args.frames
    events = prof.key_averages()
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    # torch >= 2.4 names it self_device_time_total, older releases self_cuda_time_total
    gpu_key = "self_device_time_total" if hasattr(events[0], "self_device_time_total") else "self_cuda_time_total"
    kernel_ms = sum(e.time_range.elapsed_us() for e in kernels) / 1000 / args.frames if cuda else 0.0
    result = {"benchmark": "gpu_profile", "machine": machine(device=args.device), "variant": args.variant,
              "amp": args.amp, "size": args.size, "frames": args.frames,
              "wall_ms_per_frame_profiled": round(wall * 1000, 2),
              "gpu_kernel_ms_per_frame": round(kernel_ms, 2),
              "gpu_busy_share": round(kernel_ms / (wall * 1000), 3) if cuda else None,
              "kernel_launches_per_frame": round(len(kernels) / args.frames, 1),
              "top_self_host": top(events, "self_cpu_time_total", 20),
              "top_gpu": top(events, gpu_key, 15) if cuda else []}
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25), file=sys.stderr)
    summary = {k: result[k] for k in ("variant", "amp", "size", "wall_ms_per_frame_profiled",
                                      "gpu_kernel_ms_per_frame", "gpu_busy_share", "kernel_launches_per_frame")}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
