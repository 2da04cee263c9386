"""Human-readable output of the open-set metrics: terminal table, metrics JSON, PR-curve PNG."""
from __future__ import annotations

import math
import os
from typing import Sequence

from matplotlib import colormaps
from matplotlib.figure import Figure  # the object API: no pyplot, no display, no global backend switch

from .coco_io import write_json_atomic

# (key, label, kind): kind "pct" = percentage, "count" = raw count, "ratio" = fraction
SUMMARY_ROWS: Sequence[tuple[str, str, str]] = (
    ("AP_k", "AP_k   (known, IoU .50:.95)", "pct"),
    ("AP50_k", "AP50_k", "pct"),
    ("AP75_k", "AP75_k", "pct"),
    ("APs_k", "APs_k", "pct"),
    ("APm_k", "APm_k", "pct"),
    ("APl_k", "APl_k", "pct"),
    ("AR_k@10", "AR_k@10", "pct"),
    ("AR_k@20", "AR_k@20", "pct"),
    ("AR_k@30", "AR_k@30", "pct"),
    ("AR_k@50", "AR_k@50", "pct"),
    ("AR_k@100", "AR_k@100", "pct"),
    ("AOSE", "AOSE   (known det. on unknown GT)", "count"),
    ("WI", "WI     (ratio at recall 0.8)", "ratio"),
    ("AP_unk", "AP_unk", "pct"),
    ("AP50_unk", "AP50_unk", "pct"),
    ("AR_unk@10", "AR_unk@10", "pct"),
    ("AR_unk@30", "AR_unk@30", "pct"),
    ("AR_unk@100", "AR_unk@100", "pct"),
    ("K_det_as_UNK", "K_det_as_UNK (unknown det. on known GT)", "count"),
    ("K_det_as_other_K", "K_det_as_other_K (known det. on other known GT)", "count"),
    ("num_known_gt", "known GT instances", "count"),
    ("num_unknown_gt", "unknown GT instances", "count"),
    ("num_detections", "detections", "count"),
)


def _fmt(value, kind: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if kind == "count":
        return str(int(value))
    if kind == "ratio":
        return f"{value:.4f}"
    return f"{value:.2f}"


def format_metrics_table(metrics: dict, per_class: bool = True) -> str:
    """Fixed-width table: one row per metric, one column per IoU type ("-" = undefined, e.g. no GT)."""
    types = [t for t in ("bbox", "segm") if t in metrics] + [t for t in metrics if t not in ("bbox", "segm")]
    label_w = max(len(label) for _, label, _ in SUMMARY_ROWS)
    col_w = 10
    lines = [f"{'metric':<{label_w}}" + "".join(f"{t:>{col_w}}" for t in types),
             "-" * (label_w + col_w * len(types))]
    for key, label, kind in SUMMARY_ROWS:
        if not any(key in metrics[t] for t in types):
            continue
        lines.append(f"{label:<{label_w}}" + "".join(f"{_fmt(metrics[t].get(key), kind):>{col_w}}" for t in types))
    if per_class:
        names = []
        for t in types:
            names += [n for n in metrics[t].get("per_class_AP_k", {}) if n not in names]
        if names:
            name_w = max(label_w, max(len(n) for n in names) + 2)
            lines += ["", f"{'per-class AP_k':<{name_w}}" + "".join(f"{t:>{col_w}}" for t in types),
                      "-" * (name_w + col_w * len(types))]
            for n in names:
                lines.append(f"{n:<{name_w}}" + "".join(
                    f"{_fmt(metrics[t].get('per_class_AP_k', {}).get(n), 'pct'):>{col_w}}" for t in types))
    return "\n".join(lines)


def save_metrics_json(metrics: dict, path: str | os.PathLike) -> str:
    """Atomic JSON write; NaN (metric undefined, e.g. no unknown GT) becomes null."""
    return write_json_atomic(metrics, path, indent=2)


def plot_pr_curves(pr_curves: dict, path: str | os.PathLike, title: str = "") -> str:
    """PNG with one panel per IoU type: each known class's PR curve at IoU 0.5 and the unknown class's.

    ``pr_curves`` is ``OpenSetEvaluator.pr_curves`` (filled by ``evaluate``).
    """
    types = list(pr_curves)
    if not types:
        raise ValueError("no PR curves to plot: run OpenSetEvaluator.evaluate() first")
    fig = Figure(figsize=(6 * len(types), 5))
    axes = fig.subplots(1, len(types), squeeze=False)
    for ax, t in zip(axes[0], types):
        curves = pr_curves[t]
        rec = curves["recall"]
        cmap = colormaps["tab20"]
        for i, (name, prec) in enumerate(sorted(curves["known"].items())):
            ap50 = 100 * float(prec.mean())
            ax.plot(rec, prec, color=cmap(i % 20), lw=1.2, label=f"{name} ({ap50:.1f})")
        if curves.get("unknown") is not None:
            prec = curves["unknown"]
            ax.plot(rec, prec, color="black", lw=2.5, ls="--", label=f"unknown ({100 * float(prec.mean()):.1f})")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_title(f"{t}: PR at IoU 0.5 (legend: AP50)")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="lower left", ncol=1 + len(curves["known"]) // 15)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
