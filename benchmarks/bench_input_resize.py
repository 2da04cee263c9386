"""Predictor input resize: detectron2's PIL bilinear on the uint8 image (INPUT.TEST_RESIZE "pil", faithful) vs
bilinear on floats on the device ("device"): pixel difference and time per frame, upload included.

    python benchmarks/bench_input_resize.py [--device cuda] [--repeats 20] [--json-out FILE]

Frames: a photo (matplotlib's grace_hopper.jpg sample, resized to the camera size with PIL) and uniform noise
(the worst case for interpolation differences), at 640x480 and 1280x720, resized to the faithful test size
(short side 800, long side <= 1333) exactly as semseg_core.predictor does it.
"""
import argparse
import os
import sys

import numpy as np
import torch
from matplotlib import cbook
from PIL import Image
from torch.nn import functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import emit, interleaved_medians, machine  # noqa: E402
from semseg_core.data.transforms import resize_image_pil, resize_shortest_edge_size  # noqa: E402

CAMERAS = {"640x480": (480, 640), "1280x720": (720, 1280)}


def frames(h, w):
    with cbook.get_sample_data("grace_hopper.jpg") as f:
        photo = np.array(Image.open(f).convert("RGB").resize((w, h), Image.BILINEAR))
    noise = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    return {"photo": photo, "noise": noise}


def pil_path(image, new_h, new_w, device):
    resized = torch.from_numpy(np.array(resize_image_pil(image, new_h, new_w)))
    if device.type == "cuda":
        resized = resized.pin_memory()
    return resized.to(device, non_blocking=True).permute(2, 0, 1)


def device_path(image, new_h, new_w, device):
    tensor = torch.from_numpy(image)
    if device.type == "cuda":
        tensor = tensor.pin_memory()
    tensor = tensor.to(device, non_blocking=True).permute(2, 0, 1)
    out = F.interpolate(tensor[None].float(), size=(new_h, new_w), mode="bilinear", align_corners=False)
    return out[0].round_().clamp_(0, 255).to(torch.uint8)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--json-out", default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    rows = []
    for camera, (h, w) in CAMERAS.items():
        new_h, new_w = resize_shortest_edge_size(h, w, 800, 1333)
        for kind, image in frames(h, w).items():
            timed = interleaved_medians({
                "pil": lambda: pil_path(image, new_h, new_w, device),
                "device": lambda: device_path(image, new_h, new_w, device),
            }, device=device, warmup=2, repeats=args.repeats)
            a = timed["pil"][2].cpu().numpy().astype(int)
            b = timed["device"][2].cpu().numpy().astype(int)
            diff = np.abs(a - b)
            rows.append({
                "camera": camera, "frame": kind, "resized_to": f"{new_w}x{new_h}",
                "pil_ms": round(timed["pil"][0] * 1e3, 2), "device_ms": round(timed["device"][0] * 1e3, 2),
                "pixels_differing_pct": round(100.0 * float(np.mean(diff.max(axis=0) > 0)), 2),
                "values_differing_pct": round(100.0 * np.count_nonzero(diff) / diff.size, 2),
                "max_abs_diff": int(diff.max()), "mean_abs_diff": round(float(diff.mean()), 4),
            })
            print(rows[-1])
    emit({"benchmark": "input_resize", "device": str(device), "machine": machine(device=device),
          "repeats": args.repeats, "rows": rows}, args.json_out)


if __name__ == "__main__":
    main()
