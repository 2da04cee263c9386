"""Training logs on the main process: TensorBoard scalars, ``metrics.jsonl`` and a loss-curve PNG."""
from __future__ import annotations

import json
import logging
import os
from typing import Dict, List, Optional

from matplotlib.figure import Figure  # the object API: no pyplot, no global backend switch

try:
    from torch.utils.tensorboard import SummaryWriter
except ImportError:  # tensorboard is optional at run time
    SummaryWriter = None

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
LOSS_CURVE_FILE = "loss_curve.png"


class MetricsWriter:
    """Write scalars per iteration to TensorBoard and every ``jsonl_period`` iterations to metrics.jsonl.

    On resume the jsonl lines of iterations at or after ``start_iter`` (written by the interrupted run
    after its last checkpoint) are dropped so the file tells one consistent story.
    """

    def __init__(self, output_dir: str, start_iter: int = 0, jsonl_period: int = 20, tensorboard: bool = True):
        self.output_dir = output_dir
        self.jsonl_period = max(1, int(jsonl_period))
        self.jsonl_path = os.path.join(output_dir, METRICS_FILE)
        self._truncate_jsonl(start_iter)
        self._jsonl = open(self.jsonl_path, "a")
        self._tb = None
        if tensorboard and SummaryWriter is None:
            logger.warning("tensorboard is not installed: no TensorBoard scalars will be written")
        elif tensorboard:
            self._tb = SummaryWriter(log_dir=output_dir, purge_step=start_iter)

    def _truncate_jsonl(self, start_iter: int) -> None:
        if not os.path.isfile(self.jsonl_path):
            return
        kept: List[str] = []
        with open(self.jsonl_path) as f:
            for line in f:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a kill
                if record.get("iteration", -1) < start_iter:
                    kept.append(json.dumps(record) + "\n")
        with open(self.jsonl_path, "w") as f:
            f.writelines(kept)

    def write(self, iteration: int, scalars: Dict[str, float], force_jsonl: bool = False) -> None:
        if self._tb is not None:
            for key, value in scalars.items():
                self._tb.add_scalar(key, value, iteration)
        if force_jsonl or (iteration + 1) % self.jsonl_period == 0:
            self._jsonl.write(json.dumps({"iteration": iteration, **scalars}) + "\n")
            self._jsonl.flush()

    def write_eval(self, iteration: int, metrics: Dict[str, Dict]) -> None:
        """Flatten ``{dataset: {iou_type: {metric: value}}}`` into TensorBoard scalars."""
        if self._tb is None:
            return
        for dataset, per_type in metrics.items():
            for iou_type, values in (per_type or {}).items():
                if not isinstance(values, dict):
                    continue
                for name, value in values.items():
                    if isinstance(value, (int, float)):
                        self._tb.add_scalar(f"eval/{dataset}/{iou_type}/{name}", value, iteration)

    def close(self) -> None:
        self._jsonl.close()
        if self._tb is not None:
            self._tb.close()


def plot_loss_curve(output_dir: str, out_path: Optional[str] = None) -> Optional[str]:
    """Plot every ``loss*`` series and ``total_loss`` of metrics.jsonl; returns the PNG path (None if no data)."""
    jsonl = os.path.join(output_dir, METRICS_FILE)
    if not os.path.isfile(jsonl):
        return None
    records = []
    with open(jsonl) as f:
        for line in f:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    if not records:
        return None
    keys = sorted({k for r in records for k in r if k == "total_loss" or k.startswith("loss_")})
    fig = Figure(figsize=(8, 5))
    ax = fig.subplots()
    for key in keys:
        points = [(r["iteration"], r[key]) for r in records if key in r]
        ax.plot([p[0] for p in points], [p[1] for p in points], label=key, linewidth=2 if key == "total_loss" else 1)
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out_path = out_path or os.path.join(output_dir, LOSS_CURVE_FILE)
    fig.savefig(out_path, dpi=100)
    return out_path
