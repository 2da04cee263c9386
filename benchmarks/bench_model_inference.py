"""Time SemSeg R50-FPN inference against torchvision's Mask R-CNN R50-FPN on the same 640x480 image.

Both run end to end (resize to the 800/1333 test size, model, mask pasting) with random weights, in one
process, medians over repeats after warm-up. SemSeg runs twice: the faithful config (no RPN NMS, ~4k
proposals) and with MODEL.RPN.APPLY_NMS true (NMS 0.7, 1000 proposals). Random weights make the detection
counts (and so the mask-head cost) unrepresentative; counts are printed so the comparison can be judged.

    .venv/bin/python benchmarks/bench_model_inference.py --device cpu --repeats 3
"""
import argparse
import json
import os
import statistics
import sys
import time
import warnings

import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from semseg_core.predictor import Predictor  # noqa: E402

COCO_YAML = os.path.join(REPO, "config", "models", "COCO", "semseg_R50_FPN_128k.yaml")


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _time(fn, device: str, warmup: int, repeats: int):
    for _ in range(warmup):
        out = fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--amp", choices=["fp16", "bf16"], default=None, help="autocast (CUDA only)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)

    results = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "randomly initialised"
        for name, overrides in (("semseg_faithful", []), ("semseg_rpn_nms", ["MODEL.RPN.APPLY_NMS", "true"])):
            predictor = Predictor(config=COCO_YAML, device=args.device, amp=args.amp, overrides=overrides)
            seconds, out = _time(lambda: predictor(image), args.device, args.warmup, args.repeats)
            results[name] = {"median_s": seconds, "detections": len(out)}
            del predictor

    from torchvision.models.detection import maskrcnn_resnet50_fpn
    tv = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None).eval().to(args.device)
    tensor = torch.from_numpy(image).permute(2, 0, 1).float().div(255).to(args.device)

    def run_tv():
        with torch.inference_mode(), torch.autocast(args.device.split(":")[0], dtype=torch.float16 if args.amp == "fp16"
                                                    else torch.bfloat16, enabled=args.amp is not None):
            out = tv([tensor])[0]
            return (out["masks"] >= 0.5).cpu()  # include the host copy, as the Predictor does

    seconds, masks = _time(run_tv, args.device, args.warmup, args.repeats)
    results["torchvision_maskrcnn"] = {"median_s": seconds, "detections": int(masks.shape[0])}

    base = results["torchvision_maskrcnn"]["median_s"]
    device_name = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else \
        f"cpu ({args.threads} threads)"
    print(f"640x480 input, device {device_name}, amp {args.amp}, median of {args.repeats} after {args.warmup} warm-up")
    for name, r in results.items():
        print(f"  {name:22s} {r['median_s'] * 1000:9.1f} ms  ratio vs torchvision {r['median_s'] / base:5.2f}  "
              f"detections {r['detections']}")
    summary = {"input": "640x480", "device": device_name, "amp": args.amp, "repeats": args.repeats,
               **{f"{k}_s": round(v["median_s"], 4) for k, v in results.items()},
               "ratio_faithful_vs_torchvision": round(results["semseg_faithful"]["median_s"] / base, 3),
               "ratio_rpn_nms_vs_torchvision": round(results["semseg_rpn_nms"]["median_s"] / base, 3)}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
