"""Model inference, side by side: SemSeg (faithful and fast configs) vs torchvision Mask R-CNN R50-FPN.

    .venv/bin/python benchmarks/bench_model_inference.py                       # 640x480 and 800x1333, R50 + tiny
    .venv/bin/python benchmarks/bench_model_inference.py --sizes 640x480 --variants tiny,tiny_fast --repeats 5
    .venv/bin/python benchmarks/bench_model_inference.py --detections default --channels-last

Every variant runs end to end on the same HxWx3 uint8 image, batch 1: upload, test resize, model, mask
pasting, host copy (the SemSeg Predictor also builds the label image). Random weights, so detection counts
are arbitrary; with --detections fixed (default) every model is made to return the same number N of
instances (score thresholds 0; SemSeg: UNK_THR 2.0 so all are known candidates, KNOWN_TOPK N; torchvision:
box_score_thresh 0, detections_per_img N), which makes the mask-head and pasting work comparable. In that
mode SemSeg's two box regressors are also set to identity (RPN ltrb = half the anchor, box deltas 0): random
R50 features (FrozenBN = identity, caffe input) give degenerate boxes that post-processing drops, whereas
proposals = anchors and boxes = proposals are valid boxes of the right sizes (the compute is unchanged).
--detections default keeps each config's own thresholds (torchvision then usually returns 0 detections).
Variants are timed round-robin (A B C A B C ...), medians after warm-up, so that a shared machine loads
them alike. Variants:
  r50 / r50_fast     SemSeg R50-FPN, config COCO/semseg_R50_FPN_128k.yaml / semseg_R50_FPN_fast.yaml
  tiny / tiny_fast   the demo model's architecture, Synthetic/semseg_tiny.yaml / semseg_tiny_fast.yaml
  (suffix -cl: without channels_last, +cl: with it; @N: N torch threads for that variant)
  tv                 torchvision maskrcnn_resnet50_fpn(weights=None, weights_backbone=None), test size 800/1333
  tv_480             the same with min_size 480, max_size 640 (the fast config's test size)
Ratios are against tv (same input image) and, for r50_fast, also against tv_480 (same network input size).
"""
import argparse
import os
import sys
import warnings

import numpy as np
import torch
from torchvision.models.detection import maskrcnn_resnet50_fpn

from semseg_core.precision import AMP_CHOICES, amp_dtype
from semseg_core.predictor import Predictor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import CONFIGS, emit, interleaved_medians, machine, peak_rss_mb  # noqa: E402

SEMSEG_VARIANTS = ("r50", "r50_fast", "tiny", "tiny_fast")
TV_VARIANTS = {"tv": (800, 1333), "tv_480": (480, 640)}


def fixed_detection_overrides(n: int):
    return ["MODEL.ROI_HEADS.OBJ_SCORE_THRESH_TEST", "0.0", "MODEL.SOFTMAXCLS.KNOWN_SCORE_THRESH", "0.0",
            "MODEL.SOFTMAXCLS.UNKNOWN_SCORE_THRESH", "0.0", "MODEL.DML.UNK_THR", "2.0",
            "MODEL.SOFTMAXCLS.KNOWN_TOPK", str(n), "TEST.DETECTIONS_PER_IMAGE", str(max(n, 100))]


def build_semseg(name, device="cpu", amp=None, fixed=None, channels_last=None, overrides=()):
    """A callable image -> number of detections, running the Predictor of variant `name` (random weights)."""
    torch.manual_seed(0)
    extra = list(overrides) + (fixed_detection_overrides(fixed) if fixed else [])
    if channels_last is not None:  # None: as the config says (MODEL.CHANNELS_LAST)
        extra += ["MODEL.CHANNELS_LAST", str(bool(channels_last)).lower()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "randomly initialised"
        # eager, as these tables were measured (torch.compile, on by default on CUDA, is gpu_node.py's switch)
        predictor = Predictor(config=CONFIGS[name], device=device, amp=amp, overrides=extra, compile=False)
    if fixed:
        identity_box_regressors(predictor.model)
    return predictor, (lambda image: len(predictor(image)))


@torch.no_grad()
def identity_box_regressors(model):
    """RPN ltrb = 0.5 (x anchor size: proposal = anchor); box-head deltas = 0 (box = proposal)."""
    for layer, bias in ((model.rpn.head.box_deltas, 0.5), (model.roi_heads.box_predictor.bbox_pred, 0.0)):
        layer.weight.zero_()
        layer.bias.fill_(bias)


def build_torchvision(name, device="cpu", amp=None, fixed=None, channels_last=None):
    min_size, max_size = TV_VARIANTS[name]
    kwargs = {"box_score_thresh": 0.0, "box_detections_per_img": fixed} if fixed else {}
    torch.manual_seed(0)
    model = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, min_size=min_size, max_size=max_size,
                                  **kwargs).eval().to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    dtype = amp_dtype(amp, "--amp")

    def run(image):
        with torch.inference_mode(), torch.autocast(torch.device(device).type, dtype=dtype, enabled=amp is not None):
            tensor = torch.from_numpy(image).to(device).permute(2, 0, 1).float().div_(255)
            out = model([tensor])[0]
            masks = (out["masks"][:, 0] >= 0.5).cpu()  # the host copy, as the Predictor does
            return int(masks.shape[0])
    return model, run


def build_variant(name, **kwargs):
    """name = base[+cl|-cl][@threads]: +cl / -cl = channels_last weights on / off (default: as the config
    says; the fast configs set MODEL.CHANNELS_LAST), @N = torch threads while it runs."""
    base, _, threads = name.partition("@")
    kwargs["channels_last"] = {"+cl": True, "-cl": False}.get(base[-3:])
    base = base[:-3] if base[-3:] in ("+cl", "-cl") else base
    if base in SEMSEG_VARIANTS:
        model, run = build_semseg(base, **kwargs)
    elif base in TV_VARIANTS:
        model, run = build_torchvision(base, **kwargs)
    else:
        raise SystemExit(f"unknown variant {name!r}; choose from {SEMSEG_VARIANTS + tuple(TV_VARIANTS)} "
                         "(+cl, -cl, @threads)")
    if not threads:
        return model, run

    def run_with_threads(image):
        previous = torch.get_num_threads()
        torch.set_num_threads(int(threads))
        try:
            return run(image)
        finally:
            torch.set_num_threads(previous)
    return model, run_with_threads


def test_image(width, height):
    """A frame with flat rectangles on a textured background (content matters little with random weights)."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 80, (height, width, 3), dtype=np.uint8)
    for _ in range(8):
        x0, y0 = rng.integers(0, width * 3 // 4), rng.integers(0, height * 3 // 4)
        image[y0:y0 + height // 5, x0:x0 + width // 6] = rng.integers(60, 256, 3)
    return image


def ratios(medians: dict) -> dict:
    out = {}
    for name, seconds in medians.items():
        if name.startswith("tv"):
            continue
        if "tv" in medians:
            out[f"{name}/tv"] = round(seconds / medians["tv"], 3)
        if name.startswith("r50_fast") and "tv_480" in medians:
            out[f"{name}/tv_480"] = round(seconds / medians["tv_480"], 3)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="640x480,800x1333", help="WxH list; 800x1333 = 1333 wide, 800 high")
    parser.add_argument("--variants", default="r50,r50_fast,tv,tv_480,tiny,tiny_fast",
                        help="comma list; suffix +cl / -cl = channels_last on / off, @N = N torch threads (r50+cl@1)")
    parser.add_argument("--detections", default="fixed", choices=["fixed", "default"])
    parser.add_argument("--num-detections", type=int, default=50, help="N for --detections fixed")
    parser.add_argument("--channels-last", action="store_true",
                        help="ablation: also time r50_fast-cl and tiny_fast-cl (fast configs without channels_last)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", choices=AMP_CHOICES, default=None, help="autocast (CUDA only)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--json-out", default=None, help="also write the JSON line to this file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    variants = [v for v in args.variants.split(",") if v]
    if args.channels_last:
        variants += [f"{v}-cl" for v in ("r50_fast", "tiny_fast") if v in variants]
    fixed = args.num_detections if args.detections == "fixed" else None

    results = {"benchmark": "model_inference", "machine": machine(args.threads, args.device), "amp": args.amp,
               "detections": f"fixed {fixed}" if fixed else "default thresholds", "repeats": args.repeats,
               "warmup": args.warmup, "sizes": {}}
    for size in args.sizes.split(","):
        width, height = (int(v) for v in size.lower().split("x"))
        image = test_image(width, height)
        keep, fns = [], {}
        for name in variants:
            model, fn = build_variant(name, device=args.device, amp=args.amp, fixed=fixed)
            keep.append(model)
            fns[name] = (lambda f: (lambda: f(image)))(fn)
        timed = interleaved_medians(fns, args.device, args.warmup, args.repeats)
        medians = {name: t[0] for name, t in timed.items()}
        print(f"{size} input, {results['machine']}, {results['detections']}, median of {args.repeats} "
              f"after {args.warmup} warm-up", file=sys.stderr)
        for name, (seconds, all_s, count) in timed.items():
            print(f"  {name:14s} {seconds * 1000:9.1f} ms  ({', '.join(f'{s * 1000:.0f}' for s in all_s)})  "
                  f"detections {count}", file=sys.stderr)
        results["sizes"][size] = {"median_ms": {k: round(v * 1000, 1) for k, v in medians.items()},
                                  "detections": {k: t[2] for k, t in timed.items()}, "ratio": ratios(medians)}
        print(f"  ratios: {results['sizes'][size]['ratio']}", file=sys.stderr)
        del keep, fns
    results["peak_rss_mb_all_variants"] = round(peak_rss_mb(), 1)
    emit(results, args.json_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
