"""Shared helpers of the benchmarks: side-by-side timing, peak memory, the JSON result line."""
import json
import os
import platform
import resource
import statistics
import sys
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

CONFIGS = {
    "tiny": os.path.join(REPO, "config", "models", "Synthetic", "semseg_tiny.yaml"),
    "tiny_fast": os.path.join(REPO, "config", "models", "Synthetic", "semseg_tiny_fast.yaml"),
    "r50": os.path.join(REPO, "config", "models", "COCO", "semseg_R50_FPN_128k.yaml"),
    "r50_fast": os.path.join(REPO, "config", "models", "COCO", "semseg_R50_FPN_fast.yaml"),
}


def sync(device) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def median_time(fn, device="cpu", warmup=1, repeats=3):
    """Median wall time of fn() over `repeats` calls after `warmup` untimed calls; returns (seconds, last output)."""
    out = None
    for _ in range(warmup):
        out = fn()
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def interleaved_medians(fns: dict, device="cpu", warmup=1, repeats=3):
    """Time several callables round-robin (A B C A B C ...) so a shared, noisy machine loads them alike.
    Returns {name: (median seconds, list of seconds, last output)}."""
    outputs = {}
    for name, fn in fns.items():
        for _ in range(warmup):
            outputs[name] = fn()
    sync(device)
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            outputs[name] = fn()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: (statistics.median(times[name]), times[name], outputs[name]) for name in fns}


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def machine(threads=None, device="cpu") -> str:
    if str(device).startswith("cuda"):
        return f"{torch.cuda.get_device_name(torch.device(device))}, torch {torch.__version__}"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{platform.processor() or platform.machine()} {os.cpu_count()} cores, torch threads "
            f"{threads or torch.get_num_threads()}, load avg {load:.1f}, torch {torch.__version__}")


def emit(summary: dict, json_out=None) -> None:
    """One JSON line on stdout (the machine-readable result), optionally also written to a file."""
    line = json.dumps(summary, sort_keys=False)
    print(line)
    if json_out:
        with open(json_out, "w") as f:
            f.write(line + "\n")
