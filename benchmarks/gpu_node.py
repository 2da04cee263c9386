"""Every GPU measurement of the camera-rate issue in one run, through the ROS node, saved after each step.

    python benchmarks/gpu_node.py --out gpu_node.json                 # all steps; none started after --budget-s
    python benchmarks/gpu_node.py --only node:r50_fast:640x480:fp32:compiled,profile:r50_fast:640x480:fp32:compiled
    python benchmarks/gpu_node.py --dry-run-cpu --out /tmp/dry.json    # checks the script on the CPU (toy sizes)
    bash scripts/device_kit/install_and_measure.sh KIT.tar.xz          # installs the device kit, then runs this

Steps, in priority order (a time limit keeps the ones done: the JSON file is rewritten after every step):
  node:CONFIG:WxH:PRECISION:COMPILE   perception_node in a child process (benchmarks/bench_node_latency.py's
        NodeSession: reliable QoS, latest-frame mode, device cuda, random weights, --detections instances a
        frame), warmed up frame by frame until --warmup outputs came back (the first frames compile), then
        (1) a --hz camera stream for --seconds: stamp-to-receipt latency p50 / p95 / max of the frames that came
        out and frames/s out; (2) a --max-hz stream (far above what the node can take; it keeps only the latest
        frame) for --seconds: the maximum sustained rate = frames/s out; GPU busy (NVML utilisation: share of
        time a kernel ran, sampled every 0.1 s) and GPU memory used by the node (NVML, device used minus used
        before the node started) over that phase; the node's own /diagnostics (stamp-to-publish p50/p95).
  profile:CONFIG:WxH:PRECISION:COMPILE  the bare Predictor(masks=False) (the node's call) in this process:
        median ms, torch.profiler GPU busy share (kernel time / wall) and kernel launches per frame, peak
        memory (torch.cuda.max_memory_allocated / reserved).
CONFIG: r50 (faithful, COCO/semseg_R50_FPN_128k.yaml) | r50_fast; PRECISION: fp32 | bf16 (TEST.AMP);
COMPILE: compiled | eager | cudagraphs (TEST.COMPILE enabled / disabled / cudagraphs: the torch.compile switch
side by side; cudagraphs also replays the backbone as a CUDA graph).
Without CUDA it exits with status 2 unless --dry-run-cpu (tiny_fast, 320x240, eager, a few frames).
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import warnings

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench_node_latency import NodeSession, random_checkpoint, scenes, stream_run  # noqa: E402
from common import CONFIGS, machine  # noqa: E402

COMPILE_VALUES = {"compiled": "enabled", "eager": "disabled", "cudagraphs": "cudagraphs"}
PRECISION_VALUES = {"fp32": "", "bf16": "bf16"}
# Priority order: the targets first (R50 fast / faithful at 640x480 fp32, compile on), then each switch
# side by side, then the other size and precision.
DEFAULT_STEPS = (
    "node:r50_fast:640x480:fp32:compiled", "node:r50:640x480:fp32:compiled",
    "profile:r50_fast:640x480:fp32:compiled", "node:r50_fast:640x480:fp32:eager",
    "profile:r50_fast:640x480:fp32:eager", "node:r50_fast:640x480:bf16:compiled",
    "node:r50_fast:1280x720:fp32:compiled", "node:r50:1280x720:fp32:compiled",
    "node:r50:640x480:bf16:compiled", "node:r50_fast:1280x720:bf16:compiled",
    "node:r50:1280x720:bf16:compiled", "profile:r50:640x480:fp32:compiled",
    "profile:r50_fast:1280x720:fp32:compiled", "node:r50:640x480:fp32:eager",
    "node:r50_fast:640x480:fp32:cudagraphs",
)
DRY_RUN_STEPS = ("node:tiny_fast:320x240:fp32:eager", "profile:tiny_fast:320x240:fp32:eager")


class Step:
    """One measurement named KIND:CONFIG:WxH:PRECISION:COMPILE."""

    def __init__(self, text: str):
        parts = text.split(":")
        if len(parts) != 5 or parts[0] not in ("node", "profile") or parts[1] not in CONFIGS \
                or parts[3] not in PRECISION_VALUES or parts[4] not in COMPILE_VALUES:
            raise ValueError(f"bad step {text!r}: expected node|profile:CONFIG:WxH:fp32|bf16:compiled|eager|cudagraphs with "
                             f"CONFIG one of {sorted(CONFIGS)}")
        self.text, self.kind, self.config, self.precision, self.compile = text, parts[0], parts[1], parts[3], parts[4]
        self.width, self.height = (int(v) for v in parts[2].lower().split("x"))


class GpuMonitor:
    """NVML samples (utilisation %, memory used) every `period` s in a thread, between start() and stop().
    Falls back to nothing (None figures) where NVML is missing (e.g. the CPU dry run)."""

    def __init__(self, period=0.1):
        self.period, self.samples, self.handle = period, [], None
        try:
            import pynvml
            pynvml.nvmlInit()
            # device 0 of NVML's numbering without creating a CUDA context in this process
            self.nvml, self.handle = pynvml, pynvml.nvmlDeviceGetHandleByIndex(0)
        except Exception:  # no NVML here: figures stay None
            self.handle = None

    def memory_used_mb(self):
        if self.handle is None:
            return None
        return self.nvml.nvmlDeviceGetMemoryInfo(self.handle).used / 2 ** 20

    def _loop(self):
        while not self._stop.is_set():
            utilisation = self.nvml.nvmlDeviceGetUtilizationRates(self.handle)
            self.samples.append((utilisation.gpu, self.memory_used_mb()))
            self._stop.wait(self.period)

    def start(self):
        self.samples = []
        self._stop = threading.Event()
        if self.handle is not None:
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()

    def stop(self):
        self._stop.set()
        if self.handle is None:
            return {"gpu_busy_pct_mean": None, "gpu_memory_used_mb_max": None, "samples": 0}
        self._thread.join()
        busy = [s[0] for s in self.samples]
        return {"gpu_busy_pct_mean": round(statistics.mean(busy), 1) if busy else None,
                "gpu_busy_pct_p50": round(statistics.median(busy), 1) if busy else None,
                "gpu_memory_used_mb_max": round(max(s[1] for s in self.samples), 1) if self.samples else None,
                "samples": len(busy)}


def derived_config(folder, base_config, step):
    """A model YAML on top of `base_config` with the step's precision and compile switches."""
    path = os.path.join(folder, f"{step.config}_{step.precision}_{step.compile}.yaml")
    with open(path, "w") as f:
        f.write(f"_BASE_: {os.path.abspath(base_config)}\nTEST:\n  AMP: \"{PRECISION_VALUES[step.precision]}\"\n"
                f"  COMPILE: {COMPILE_VALUES[step.compile]}\n")
    return path


def node_step(step, args, folder, checkpoints, monitor):
    base, weights = checkpoints[step.config]
    config = derived_config(folder, base, step)
    frames = scenes(8, step.width, step.height)
    before = monitor.memory_used_mb()
    started = time.time()
    with NodeSession(config, weights, threads=args.threads, device=args.device, start_timeout=300) as session:
        start_s = time.time() - started
        warm = [session.send_and_wait(frames[i % len(frames)], timeout=600)[1] for i in range(args.warmup)]
        camera = stream_run(session.publisher, session.arrived, frames, args.hz, args.seconds)
        monitor.start()
        flood = stream_run(session.publisher, session.arrived, frames, args.max_hz, args.seconds)
        gpu = monitor.stop()
        time.sleep(1.0)  # one more diagnostics period
        diagnostics = session.node_diagnostics()
    if gpu.get("gpu_memory_used_mb_max") is not None and before is not None:
        gpu["node_gpu_memory_mb"] = round(gpu["gpu_memory_used_mb_max"] - before, 1)
    return {"node_start_s": round(start_s, 1), "first_frame_s": round(warm[0], 2),
            "warmup_last_round_trip_ms": round(warm[-1] * 1e3, 1),
            f"stream_{args.hz:g}hz": camera, "max_rate": flood, "max_rate_gpu": gpu,
            "node_diagnostics": diagnostics}


def profile_step(step, args, folder, checkpoints):
    from torch.profiler import ProfilerActivity, profile

    from semseg_core import Predictor
    base, weights = checkpoints[step.config]
    config = derived_config(folder, base, step)
    cuda = args.device.startswith("cuda")
    frames = scenes(4, step.width, step.height)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        predictor = Predictor(config=config, weights=weights, device=args.device)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    started = time.time()
    counts = [len(predictor(frames[i % len(frames)], masks=False)) for i in range(args.warmup)]
    first_s = time.time() - started
    sync()
    times = []
    for i in range(args.frames):
        start = time.perf_counter()
        predictor(frames[i % len(frames)], masks=False)
        sync()
        times.append(time.perf_counter() - start)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    profiled = max(5, args.frames // 2)
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        for i in range(profiled):
            predictor(frames[i % len(frames)], masks=False)
        sync()
        wall = (time.perf_counter() - start) / profiled
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    kernel_ms = sum(e.time_range.elapsed_us() for e in kernels) / 1000 / profiled if cuda else None
    syncs = sum(e.count for e in prof.key_averages() if "synchronize" in e.key.lower())
    out = {"warmup_s": round(first_s, 1), "detections": counts[-1], "median_ms": round(statistics.median(times) * 1e3, 2),
           "fps": round(1.0 / statistics.median(times), 1), "wall_ms_profiled": round(wall * 1e3, 2),
           "gpu_kernel_ms": round(kernel_ms, 2) if kernel_ms is not None else None,
           "gpu_busy_share": round(kernel_ms / (wall * 1e3), 3) if kernel_ms is not None else None,
           "kernel_launches_per_frame": round(len(kernels) / profiled, 1),
           "synchronize_calls_per_frame": round(syncs / profiled, 1)}
    if cuda:
        out["peak_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 2 ** 20, 1)
        out["peak_reserved_mb"] = round(torch.cuda.max_memory_reserved() / 2 ** 20, 1)
    del predictor
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n", 2)[2],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join(os.environ.get("OUT", "."), "gpu_node.json"))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--only", default="", help="comma list of steps to run instead of the default list")
    parser.add_argument("--skip", default="", help="comma list of steps to leave out")
    parser.add_argument("--budget-s", type=float, default=450.0,
                        help="start no new step after this many seconds (the device tool stops a call at 600 s, "
                             "and a node step takes up to ~90 s)")
    parser.add_argument("--hz", type=float, default=30.0, help="camera rate of the latency phase")
    parser.add_argument("--max-hz", type=float, default=250.0, help="input rate of the maximum-rate phase")
    parser.add_argument("--seconds", type=float, default=6.0, help="length of each stream phase")
    parser.add_argument("--warmup", type=int, default=5, help="frames sent one by one before measuring")
    parser.add_argument("--frames", type=int, default=30, help="timed frames of a profile step")
    parser.add_argument("--detections", type=int, default=20, help="instances a frame (random weights)")
    parser.add_argument("--threads", type=int, default=4, help="node / torch CPU threads")
    parser.add_argument("--dry-run-cpu", action="store_true", help="check the script on the CPU at a toy size")
    args = parser.parse_args(argv)
    names = [s for s in args.only.split(",") if s] or list(DRY_RUN_STEPS if args.dry_run_cpu else DEFAULT_STEPS)
    skip = {s for s in args.skip.split(",") if s}
    try:
        steps = [Step(name) for name in names if name not in skip]
    except ValueError as error:
        parser.error(str(error))
    if args.dry_run_cpu:
        args.device, args.seconds, args.warmup, args.frames, args.threads = "cpu", 2.0, 2, 3, 1
        args.hz = args.max_hz = 10.0
        torch.set_num_threads(1)
    elif not torch.cuda.is_available():
        print("gpu_node.py: CUDA is not available here (torch.cuda.is_available() is False); run it where a GPU "
              "is lent, or use --dry-run-cpu to check the script", file=sys.stderr)
        return 2
    else:
        torch.backends.cudnn.benchmark = True
    results = {"benchmark": "gpu_node", "machine": machine(device=args.device), "date": time.strftime("%Y-%m-%d %H:%M"),
               "settings": {k: getattr(args, k) for k in ("hz", "max_hz", "seconds", "warmup", "frames", "detections",
                                                          "threads")},
               "steps": {}, "not_run": []}
    manifest = os.path.join(os.path.dirname(HERE), "manifest.json")  # present when run from the device kit
    if os.path.isfile(manifest):
        with open(manifest) as f:
            results["kit"] = {k: v for k, v in json.load(f).items() if k != "wheels"}

    def save():
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)

    started = time.time()
    monitor = GpuMonitor()
    with tempfile.TemporaryDirectory() as folder:
        checkpoints = {}
        for step in steps:
            if time.time() - started > args.budget_s:
                results["not_run"].append(step.text)
                continue
            print(f"[gpu_node {time.time() - started:5.0f} s] {step.text}", file=sys.stderr, flush=True)
            t0 = time.time()
            try:
                if step.config not in checkpoints:
                    sub = os.path.join(folder, step.config)
                    os.makedirs(sub)
                    checkpoints[step.config] = random_checkpoint(CONFIGS[step.config], sub, args.detections)
                if step.kind == "node":
                    out = node_step(step, args, folder, checkpoints, monitor)
                else:
                    out = profile_step(step, args, folder, checkpoints)
            except Exception as error:  # keep the other steps' figures
                out = {"error": f"{type(error).__name__}: {error}"[-4000:]}
            out["step_s"] = round(time.time() - t0, 1)
            results["steps"][step.text] = out
            print(f"[gpu_node] {step.text}: {json.dumps(out)[:600]}", file=sys.stderr, flush=True)
            save()
    save()
    print(json.dumps({"benchmark": "gpu_node", "out": args.out, "steps": len(results["steps"]),
                      "errors": [k for k, v in results["steps"].items() if "error" in v],
                      "not_run": results["not_run"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
