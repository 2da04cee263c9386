"""Accuracy cost of the fast switches: training/evaluate.py on one checkpoint with the faithful config, the fast
config and single-switch ablations, side by side (AP_k, AP_unk, AR_unk@100, bbox and segm).

    .venv/bin/python benchmarks/bench_accuracy.py --weights semseg_core/assets/semseg_tiny_synthetic.pt
    .venv/bin/python benchmarks/bench_accuracy.py --weights W DATASETS.ROOT /data/datasets   # extra overrides

Variants (all on the same weights and the same test set, cfg.DATASETS.TEST of the tiny config):
  faithful        config/models/Synthetic/semseg_tiny.yaml
  fast            config/models/Synthetic/semseg_tiny_fast.yaml
  rpn_nms_top100  faithful + RPN NMS, 100 proposals   (the fast config's RPN switch alone)
  rpn_nms_top300  faithful + RPN NMS, 300 proposals
  channels_last   faithful + MODEL.CHANNELS_LAST      (should change nothing beyond float rounding)
Each runs in its own `training/evaluate.py` process with 1 torch thread; its wall time (model over the test
set + evaluation) is reported too. Target: fast within 1 point of faithful on AP_k and AR_unk.
"""
import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from common import CONFIGS, REPO, emit, machine  # noqa: E402

VARIANTS = {
    "faithful": ("tiny", []),
    "fast": ("tiny_fast", []),
    "rpn_nms_top100": ("tiny", ["MODEL.RPN.APPLY_NMS", "true", "MODEL.RPN.POST_NMS_TOPK_TEST", "100"]),
    "rpn_nms_top300": ("tiny", ["MODEL.RPN.APPLY_NMS", "true", "MODEL.RPN.POST_NMS_TOPK_TEST", "300"]),
    "channels_last": ("tiny", ["MODEL.CHANNELS_LAST", "true"]),
}
METRICS = ("AP_k", "AP_unk", "AR_unk@100")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", required=True, help="a trained tiny checkpoint")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--out", default=os.path.join(REPO, "output", "bench_accuracy"))
    parser.add_argument("--json-out", default=None)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="extra config overrides for every variant")
    args = parser.parse_args(argv)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    table = {}
    for name in [v for v in args.variants.split(",") if v]:
        config, overrides = VARIANTS[name]
        out = os.path.join(args.out, name)
        command = [sys.executable, os.path.join(REPO, "training", "evaluate.py"), "--config-file", CONFIGS[config],
                   "--out", out, "--device", "cpu", "MODEL.WEIGHTS", args.weights] + overrides + list(args.opts)
        start = time.time()
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        if done.returncode != 0:
            raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
        with open(os.path.join(out, "metrics.json")) as f:
            metrics = json.load(f)
        table[name] = {f"{t}/{m}": round(float(metrics[t][m]), 2) for t in ("bbox", "segm") if t in metrics
                       for m in METRICS}
        table[name]["eval_wall_s"] = round(time.time() - start, 1)
        print(f"  {name:15s} {table[name]}", file=sys.stderr)
    delta = {}
    if "faithful" in table:
        for name, row in table.items():
            if name != "faithful":
                delta[name] = {k: round(v - table["faithful"][k], 2) for k, v in row.items() if k != "eval_wall_s"}
    emit({"benchmark": "accuracy", "machine": machine(1), "weights": os.path.basename(args.weights),
          "overrides": list(args.opts), "metrics": table, "delta_vs_faithful": delta}, args.json_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
