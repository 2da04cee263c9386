"""Every GPU measurement in one run, written to one JSON file (run it whenever a CUDA GPU is lent).

    .venv/bin/python benchmarks/gpu_all.py --out gpu_all.json            # ~5-10 min on one H100
    .venv/bin/python benchmarks/gpu_all.py --out gpu_all.json --compile --skip node,training

Parts (each can be skipped with --skip):
  inference  SemSeg (r50, r50_fast, tiny_fast) vs torchvision Mask R-CNN (tv at 800/1333, tv_480), fp32 / fp16 /
             bf16 autocast, 640x480 and 800x1333, batch 1, fixed 50 detections (see bench_model_inference.py),
             cudnn.benchmark on; round-robin medians, torch.cuda.synchronize() around every timed call.
  lean       r50_fast / tiny_fast: the stock Predictor, Predictor(masks=False) (label_only: the node's path),
             and a lean per-frame path: the frame is copied into a pinned host buffer
             and uploaded non_blocking, masks are pasted and the label image built on the device, and
             boxes/scores/classes/distances + label image come back in ONE device-to-host copy (into pinned
             memory); vs the stock Predictor (pageable upload, several small copies + the N x H x W masks).
             --compile adds the same with torch.compile on the backbone.
  memory     peak GPU memory (torch.cuda.max_memory_allocated / reserved) per variant and precision.
  training   bench_training.py on the GPU (fp32 and bf16 autocast), batch 2 of 640x480.
  node       bench_node_latency.py with device cuda: R50 fast config (random weights) and the tiny fast
             config, 20 detections a frame, stamp-to-publish vs bare Predictor, then a 30 Hz stream (target:
             >= 30 frames/s R50 fast).
Without CUDA it stops with an error (exit status 2); --dry-run-cpu runs the same code on the CPU at a toy
size to check the script itself (no timings worth reading).
"""
import argparse
import json
import os
import subprocess
import sys
import time
import warnings

import numpy as np
import torch
from torch.nn import functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench_model_inference import build_variant, test_image  # noqa: E402
from common import CONFIGS, interleaved_medians, machine, peak_rss_mb  # noqa: E402

PRECISIONS = {"fp32": None, "fp16": "fp16", "bf16": "bf16"}


class LeanFrame:
    """One frame through a Predictor's model with one host->device and one device->host copy."""

    def __init__(self, predictor, height, width, device):
        from semseg_core.data.transforms import resize_shortest_edge_size
        self.predictor, self.device = predictor, torch.device(device)
        self.height, self.width = height, width
        cfg = predictor.cfg
        self.resized = resize_shortest_edge_size(height, width, int(cfg.INPUT.MIN_SIZE_TEST),
                                                 int(cfg.INPUT.MAX_SIZE_TEST))
        self.flip = cfg.INPUT.FORMAT == "BGR"  # frames are RGB
        pin = self.device.type == "cuda"
        self.host_in = torch.empty((height, width, 3), dtype=torch.uint8, pin_memory=pin)
        self.pin = pin
        self.host_out = {}  # pinned output buffers by byte size

    def __call__(self, image: np.ndarray):
        from semseg_core.modeling.postprocess import label_image_from_masks, paste_masks
        h, w = self.height, self.width
        self.host_in.numpy()[...] = image
        tensor = self.host_in.to(self.device, non_blocking=True).permute(2, 0, 1)
        if self.flip:
            tensor = tensor.flip(0)
        if self.resized != (h, w):
            tensor = F.interpolate(tensor[None].float(), size=self.resized, mode="bilinear", align_corners=False)
            tensor = tensor[0].round_().clamp_(0, 255).to(torch.uint8)
        with torch.inference_mode(), self.predictor._autocast():
            out = self.predictor.model([{"image": tensor.contiguous(), "height": h, "width": w}])[0]
            scores = out["scores"].float()
            order = torch.argsort(scores, descending=True, stable=True)
            boxes = out["boxes"].float()[order]
            n = int(order.numel())
            if n:
                masks = paste_masks(out["mask_probs"][order].float(), boxes, h, w)
                label = label_image_from_masks(masks).to(torch.int16)
            else:
                label = torch.zeros((h, w), dtype=torch.int16, device=self.device)
            dets = torch.cat([boxes, scores[order, None], out["classes"][order, None].float(),
                              out["unknown_scores"][order, None].float()], dim=1).contiguous()
            packed = torch.cat([label.reshape(-1).view(torch.uint8), dets.reshape(-1).view(torch.uint8)])
        host = self.host_out.get(packed.numel())
        if host is None:
            host = self.host_out[packed.numel()] = torch.empty(packed.numel(), dtype=torch.uint8, pin_memory=self.pin)
        host.copy_(packed, non_blocking=True)  # the one device-to-host copy of the frame
        if self.device.type == "cuda":
            torch.cuda.current_stream(self.device).synchronize()
        label_image = host[: h * w * 2].view(torch.int16).numpy().view(np.uint16).reshape(h, w)
        detections = host[h * w * 2:].view(torch.float32).numpy().reshape(-1, 7)
        return len(detections) if label_image is not None else 0


def part_inference(args, sizes, results):
    variants = ["r50", "r50_fast", "tv", "tv_480", "tiny_fast"] if not args.dry_run_cpu else ["tiny_fast", "tv_480"]

    def measure(precision, width, height):
        image = test_image(width, height)
        keep, fns = [], {}
        for name in variants:
            model, fn = build_variant(name, device=args.device, amp=PRECISIONS[precision], fixed=50)
            keep.append(model)
            fns[name] = (lambda f: (lambda: f(image)))(fn)
        timed = interleaved_medians(fns, args.device, args.warmup, args.repeats)
        key = f"{precision} {width}x{height}"
        med = {k: t[0] for k, t in timed.items()}
        results["inference"][key] = {
            "median_ms": {k: round(v * 1000, 2) for k, v in med.items()},
            "fps": {k: round(1.0 / v, 1) for k, v in med.items()},
            "detections": {k: t[2] for k, t in timed.items()},
            "ratio_vs_tv": {k: round(v / med["tv"], 3) for k, v in med.items() if "tv" in med}}
        print(f"[inference {key}] {results['inference'][key]['median_ms']}", file=sys.stderr)

    each_setting(args, sizes, "inference", results, measure)


def part_lean(args, sizes, results):
    names = ["r50_fast", "tiny_fast"] if not args.dry_run_cpu else ["tiny_fast"]

    def measure(precision, width, height):
        image = test_image(width, height)
        fns, keep = {}, []
        for name in names:
            predictor, stock = build_variant(name, device=args.device, amp=PRECISIONS[precision], fixed=50)
            keep.append(predictor)
            fns[f"{name}_predictor"] = (lambda f: (lambda: f(image)))(stock)
            # the node's path: Predictor(masks=False), only the label image leaves the device
            fns[f"{name}_label_only"] = (lambda p: (lambda: len(p(image, masks=False))))(predictor)
            fns[f"{name}_lean"] = (lambda f: (lambda: f(image)))(LeanFrame(predictor, height, width, args.device))
            if args.compile:
                compiled, _ = build_variant(name, device=args.device, amp=PRECISIONS[precision], fixed=50)
                compiled.model.backbone = torch.compile(compiled.model.backbone, dynamic=False)
                keep.append(compiled)
                fns[f"{name}_lean_compiled"] = (lambda f: (lambda: f(image)))(
                    LeanFrame(compiled, height, width, args.device))
        # compiled variants need several warm-up calls (compilation happens in the first)
        timed = interleaved_medians(fns, args.device, max(args.warmup, 3 if args.compile else 1), args.repeats)
        key = f"{precision} {width}x{height}"
        results["lean"][key] = {"median_ms": {k: round(t[0] * 1000, 2) for k, t in timed.items()},
                                "fps": {k: round(1.0 / t[0], 1) for k, t in timed.items()}}
        print(f"[lean {key}] {results['lean'][key]['median_ms']}", file=sys.stderr)

    each_setting(args, sizes, "lean", results, measure)


def part_memory(args, sizes, results):
    variants = ["r50", "r50_fast", "tv", "tiny_fast"] if not args.dry_run_cpu else ["tiny_fast"]
    for precision in args.precisions:
        for width, height in sizes:
            image = test_image(width, height)
            for name in variants:
                key = f"{precision} {width}x{height} {name}"
                if args.device.startswith("cuda"):
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats()
                model, fn = build_variant(name, device=args.device, amp=PRECISIONS[precision], fixed=50)
                for _ in range(2):
                    fn(image)
                if args.device.startswith("cuda"):
                    results["memory"][key] = {
                        "peak_allocated_mb": round(torch.cuda.max_memory_allocated() / 2 ** 20, 1),
                        "peak_reserved_mb": round(torch.cuda.max_memory_reserved() / 2 ** 20, 1)}
                else:
                    results["memory"][key] = {"peak_rss_mb_process": round(peak_rss_mb(), 1)}
                del model, fn
    print(f"[memory] {results['memory']}", file=sys.stderr)


def each_setting(args, sizes, part, results, measure):
    """measure(precision, width, height) for every precision and size; a failure is recorded under its key
    and the other settings still run (e.g. one op without fp16 support must not hide the bf16 figures)."""
    for precision in args.precisions:
        for width, height in sizes:
            try:
                measure(precision, width, height)
            except Exception as error:
                results[part][f"{precision} {width}x{height}"] = {"error": f"{type(error).__name__}: {error}"}
                print(f"[{part} {precision} {width}x{height}] failed: {error}", file=sys.stderr)
            if args.device.startswith("cuda"):
                torch.cuda.empty_cache()
            args.save()  # after every setting, so a time limit keeps what was measured


def run_child(command, timeout):
    """A benchmark script in a child process; its last stdout line is its JSON result."""
    start = time.time()
    done = subprocess.run([sys.executable] + command, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        return {"error": f"exit {done.returncode}", "stderr_tail": done.stderr[-3000:]}
    out = json.loads(done.stdout.strip().splitlines()[-1])
    out["wall_s"] = round(time.time() - start, 1)
    return out


def part_training(args, results):
    size = "640x480" if not args.dry_run_cpu else "96x64"
    for amp in (None, "bf16") if not args.dry_run_cpu else (None,):
        command = [os.path.join(HERE, "bench_training.py"), "--device", args.device, "--size", size, "--repeats",
                   str(max(args.repeats, 5) if not args.dry_run_cpu else 1), "--warmup", "2" if not args.dry_run_cpu else "0"]
        if args.dry_run_cpu:
            command += ["--variants", "tiny"]
        if amp:
            command += ["--amp", amp]
        results["training"][amp or "fp32"] = run_child(command, 900)
        args.save()
        print(f"[training {amp or 'fp32'}] {results['training'][amp or 'fp32']}", file=sys.stderr)


def part_node(args, results):
    configs = [("r50_fast", 40), ("tiny_fast", 40)] if not args.dry_run_cpu else [("tiny_fast", 3)]
    for name, frames in configs:
        command = [os.path.join(HERE, "bench_node_latency.py"), "--device", args.device, "--config", CONFIGS[name],
                   "--frames", str(frames), "--stream-seconds", "10" if not args.dry_run_cpu else "2",
                   "--fixed-detections", "20"]
        results["node"][name] = run_child(command, 900)
        print(f"[node {name}] {results['node'][name]}", file=sys.stderr)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join(os.environ.get("OUT", "."), "gpu_all.json"))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--precisions", default="fp32,fp16,bf16")
    parser.add_argument("--sizes", default="640x480,800x1333", help="WxH list")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile'd backbones (lean part)")
    parser.add_argument("--no-cudnn-benchmark", action="store_true")
    parser.add_argument("--skip", default="", help="comma list of parts to skip: inference,lean,memory,training,node")
    parser.add_argument("--dry-run-cpu", action="store_true", help="check the script on the CPU at a toy size")
    args = parser.parse_args(argv)
    if args.dry_run_cpu:
        args.device, args.precisions, args.sizes, args.repeats, args.warmup = "cpu", "fp32", "160x120", 1, 0
        torch.set_num_threads(1)
    elif not torch.cuda.is_available():
        print("gpu_all.py: CUDA is not available on this machine (torch.cuda.is_available() is False); "
              "run it where a GPU is lent, or use --dry-run-cpu to check the script", file=sys.stderr)
        return 2
    else:
        torch.backends.cudnn.benchmark = not args.no_cudnn_benchmark
    args.precisions = [p for p in args.precisions.split(",") if p]
    bad = [p for p in args.precisions if p not in PRECISIONS]
    if bad:
        parser.error(f"unknown precision(s) {bad}; choose from {list(PRECISIONS)}")
    sizes = [tuple(int(v) for v in s.lower().split("x")) for s in args.sizes.split(",") if s]
    skip = {s for s in args.skip.split(",") if s}
    warnings.simplefilter("ignore", UserWarning)
    results = {"benchmark": "gpu_all", "machine": machine(device=args.device), "date": time.strftime("%Y-%m-%d %H:%M"),
               "cudnn_benchmark": torch.backends.cudnn.benchmark, "repeats": args.repeats, "warmup": args.warmup,
               "detections": "fixed 50", "inference": {}, "lean": {}, "memory": {}, "training": {}, "node": {}}

    def save():
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)
    args.save = save

    for part, run in (("inference", lambda: part_inference(args, sizes, results)),
                      ("memory", lambda: part_memory(args, sizes, results)),
                      ("training", lambda: part_training(args, results)),
                      ("lean", lambda: part_lean(args, sizes, results)),
                      ("node", lambda: part_node(args, results))):
        if part in skip:
            continue
        try:
            run()
        except Exception as error:  # keep what the other parts measured
            results[part]["error"] = f"{type(error).__name__}: {error}"
            print(f"[{part}] failed: {error}", file=sys.stderr)
        save()  # after every part, so a time limit still leaves the parts done
    print(json.dumps({"benchmark": "gpu_all", "out": args.out}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
