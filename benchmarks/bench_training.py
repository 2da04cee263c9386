"""Training step, side by side: SemSeg vs torchvision Mask R-CNN R50-FPN, same batch, same images and targets.

    .venv/bin/python benchmarks/bench_training.py                     # R50 + tiny, batch 2 of 640x480, 3 steps
    .venv/bin/python benchmarks/bench_training.py --variants tiny,tv --size 256x256 --batch 2 --repeats 5

One step = forward with targets, sum of the losses, backward, SGD step (lr 1e-4, momentum 0.9). Images are
given at the size the network sees (SemSeg's model takes resized images; torchvision's resize is set to
that size so it does nothing). Random weights; every variant is timed round-robin, medians after warm-up.
Variants:
  r50      SemSeg R50-FPN (COCO config: FrozenBN, stem + res2 frozen, as the authors train)
  tiny     SemSeg tiny (Synthetic config: ResNet-18, GN, nothing frozen)
  tv       torchvision maskrcnn_resnet50_fpn(weights=None, weights_backbone=None): with no weights torchvision
           trains all 5 trunk stages with BatchNorm
  tv_frozen  the same with FrozenBatchNorm2d and stem + layer1 frozen (the R50 set-up of SemSeg)
A suffix +bf16 / +fp16 runs that variant under autocast (e.g. --variants tiny,tiny+bf16: a CPU's bfloat16
speed-up side by side); --amp applies to the variants without a suffix.
"""
import argparse
import os
import sys

import numpy as np
import torch
from torchvision.models.detection import maskrcnn_resnet50_fpn
from torchvision.ops import FrozenBatchNorm2d

from semseg_core.config import load_config
from semseg_core.modeling import build_model
from semseg_core.precision import AMP_CHOICES, amp_dtype

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import CONFIGS, emit, interleaved_medians, machine, peak_rss_mb  # noqa: E402


def make_batch(batch, width, height, objects=4, num_known=6, seed=0):
    """Images with rectangles and their boxes/masks; returns (semseg inputs, torchvision images, targets)."""
    rng = np.random.default_rng(seed)
    semseg, tv_images, tv_targets = [], [], []
    for index in range(batch):
        image = torch.from_numpy(rng.integers(0, 80, (3, height, width), dtype=np.uint8))
        boxes, masks = [], torch.zeros((objects, height, width), dtype=torch.uint8)
        for k in range(objects):
            w, h = int(rng.integers(width // 8, width // 3)), int(rng.integers(height // 8, height // 3))
            x0, y0 = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
            image[:, y0:y0 + h, x0:x0 + w] = torch.from_numpy(rng.integers(100, 256, (3, 1, 1), dtype=np.uint8))
            masks[k, y0:y0 + h, x0:x0 + w] = 1
            boxes.append([x0, y0, x0 + w, y0 + h])
        boxes = torch.tensor(boxes, dtype=torch.float32)
        classes = torch.from_numpy(rng.integers(0, num_known, objects)).long()
        semseg.append({"image": image, "height": height, "width": width, "image_id": index,
                       "instances": {"boxes": boxes, "classes": classes, "masks": masks}})
        tv_images.append(image.float() / 255)
        tv_targets.append({"boxes": boxes, "labels": classes + 1, "masks": masks})
    return semseg, tv_images, tv_targets


def to_device(semseg_inputs, images, targets, device):
    if device == "cpu":
        return semseg_inputs, images, targets
    move = (lambda d: {k: (v.to(device) if torch.is_tensor(v) else move(v) if isinstance(v, dict) else v)
                       for k, v in d.items()})
    return [move(x) for x in semseg_inputs], [i.to(device) for i in images], [move(t) for t in targets]


def build_semseg(name, semseg_inputs, device="cpu", amp=None):
    torch.manual_seed(0)
    cfg = load_config(CONFIGS[name], ["MODEL.DEVICE", device])
    model = build_model(cfg).to(device).train()
    return model, sgd_step(model, lambda: model(semseg_inputs), device, amp)


def sgd_step(model, losses_of_batch, device, amp):
    """One timed unit: forward (losses) under autocast, backward, SGD step (lr 1e-4, momentum 0.9)."""
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)

    def step():
        with autocast(device, amp):
            total = sum(losses_of_batch().values())
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        return float(total.detach())
    return step


def autocast(device, amp):
    return torch.autocast(torch.device(device).type, dtype=amp_dtype(amp, "--amp") or torch.float32,
                          enabled=amp is not None)


def build_torchvision(name, images, targets, width, height, device="cpu", amp=None):
    torch.manual_seed(0)
    frozen = {"norm_layer": FrozenBatchNorm2d} if name == "tv_frozen" else {}
    model = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=7,
                                  min_size=min(width, height), max_size=max(width, height), **frozen).to(device).train()
    if name == "tv_frozen":  # torchvision ignores trainable_backbone_layers without weights: freeze stem + res2 here
        for module in (model.backbone.body.conv1, model.backbone.body.layer1):
            module.requires_grad_(False)
    return model, sgd_step(model, lambda: model(images, targets), device, amp)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default="r50,tv,tv_frozen,tiny")
    parser.add_argument("--size", default="640x480", help="WxH of every training image (network input size)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", choices=AMP_CHOICES, default=None, help="autocast for every variant without a +suffix (no grad scaler; bf16 also on a CPU)")
    parser.add_argument("--json-out", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    width, height = (int(v) for v in args.size.lower().split("x"))
    semseg_inputs, images, targets = to_device(*make_batch(args.batch, width, height), args.device)
    keep, steps = [], {}
    for name in [v for v in args.variants.split(",") if v]:
        base, _, amp = name.partition("+")
        amp = amp or args.amp
        if amp is not None and amp not in AMP_CHOICES:
            raise SystemExit(f"unknown precision suffix in {name!r}; use one of +{', +'.join(AMP_CHOICES)}")
        if base in ("r50", "tiny"):
            model, step = build_semseg(base, semseg_inputs, args.device, amp)
        elif base in ("tv", "tv_frozen"):
            model, step = build_torchvision(base, images, targets, width, height, args.device, amp)
        else:
            raise SystemExit(f"unknown variant {name!r}")
        keep.append(model)
        steps[name] = step
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    timed = interleaved_medians(steps, args.device, args.warmup, args.repeats)
    medians = {name: t[0] for name, t in timed.items()}
    print(f"training step, batch {args.batch} x {args.size}, {machine(args.threads)}, median of {args.repeats} "
          f"after {args.warmup} warm-up", file=sys.stderr)
    machine_text = machine(args.threads, args.device)
    for name, (seconds, all_s, loss) in timed.items():
        print(f"  {name:10s} {seconds:7.2f} s/iter  ({', '.join(f'{s:.2f}' for s in all_s)})  loss {loss:.3f}",
              file=sys.stderr)
    ratio = {f"{n}/{base}": round(medians[n] / medians[base], 3) for n in medians if not n.startswith("tv")
             for base in ("tv", "tv_frozen") if base in medians}
    ratio.update({f"{n}/{n.partition('+')[0]}": round(medians[n] / medians[n.partition("+")[0]], 3)
                  for n in medians if "+" in n and n.partition("+")[0] in medians})
    summary = {"benchmark": "training_step", "machine": machine_text, "amp": args.amp, "batch": args.batch,
               "size": args.size, "repeats": args.repeats, "s_per_iter": {k: round(v, 3) for k, v in medians.items()},
               "ratio": ratio, "peak_rss_mb_all_variants": round(peak_rss_mb(), 1)}
    if args.device.startswith("cuda"):
        summary["peak_gpu_allocated_mb_all_variants"] = round(torch.cuda.max_memory_allocated() / 2 ** 20, 1)
    emit(summary, args.json_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
