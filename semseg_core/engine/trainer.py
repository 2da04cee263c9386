"""The training loop: SGD + warmup multistep, AMP (float16 on CUDA, bfloat16 on CUDA or CPU), DDP, atomic
checkpoints with exact resume, periodic evaluation, TensorBoard/jsonl logs and a progress bar.

Iterations are 0-based as in detectron2: iteration ``it`` is the (it+1)-th optimizer step; a checkpoint
taken after it is ``model_{it:07d}.pth`` and resuming from it starts at ``it + 1``.
"""
from __future__ import annotations

import logging
import os
import random
import time
from contextlib import nullcontext
from typing import Any, Dict, Optional

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from tqdm import tqdm

from semseg_core.checkpoint import check_backbone_initialisation, load_initial_weights, load_model_weights
from semseg_core.data import build_train_loader, ensure_synthetic_dataset
from semseg_core.evaluation import evaluate_model, save_metrics_json
from semseg_core.modeling import build_model
from semseg_core.device import resolve_device
from semseg_core.precision import AMP_DTYPES, amp_name

from . import distributed as comm
from .checkpointing import (
    FINAL_CHECKPOINT_NAME,
    capture_rng_state,
    checkpoint_name,
    find_last_checkpoint,
    load_training_checkpoint,
    restore_rng_state,
    save_training_checkpoint,
    write_text_atomic,
)
from .events import MetricsWriter, plot_loss_curve
from .optim import build_lr_scheduler, build_optimizer, clip_gradients

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------ set-up helpers
def training_device(name: str) -> torch.device:
    """``MODEL.DEVICE`` as a torch.device (semseg_core.device rules); with several processes, one GPU each."""
    device = resolve_device(name, what="MODEL.DEVICE")
    if device.type == "cuda" and comm.get_world_size() > 1:
        return torch.device("cuda", comm.get_local_rank())
    return device


def resolve_seed(seed: int) -> int:
    """``SEED`` < 0 draws a random seed; the main process's choice is shared with all ranks."""
    if seed < 0:
        seed = int.from_bytes(os.urandom(4), "little") & 0x7FFFFFFF
    return comm.broadcast_int(seed)


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def configure_cpu_threads(device: torch.device) -> None:
    """Share the cores between the local processes (unless the user set OMP_NUM_THREADS)."""
    if device.type != "cpu" or "OMP_NUM_THREADS" in os.environ:
        return
    local = comm.get_local_world_size()
    if local > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local))


def amp_settings(cfg, device: torch.device):
    """(enabled, dtype) of mixed precision from SOLVER.AMP; float16 on a CPU is ignored with a warning."""
    name = amp_name(cfg.SOLVER.AMP.DTYPE, "SOLVER.AMP.DTYPE")  # float16 | bfloat16 (fp16 | bf16 accepted)
    enabled = bool(cfg.SOLVER.AMP.ENABLED)
    if enabled and device.type != "cuda" and name == "float16":
        logger.warning("SOLVER.AMP.ENABLED is ignored on %s with float16 (CUDA only); "
                       "set SOLVER.AMP.DTYPE bfloat16 for mixed precision on a CPU", device)
        enabled = False
    if enabled and device.type == "cpu" and name == "bfloat16" and not cpu_has_fast_bfloat16():
        logger.warning("this CPU has no native bfloat16 (AVX-512 BF16 / AMX): bfloat16 autocast will be slower "
                       "than float32 here; set SOLVER.AMP.ENABLED false")
    return enabled, AMP_DTYPES[name]


def cpu_has_fast_bfloat16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # private oneDNN probe: absent in some builds
        return False


def prepare_datasets(cfg) -> None:
    """Generate the synthetic datasets the config names, if missing (call on one process only)."""
    names = [n for n in list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST) if n.startswith("synthetic_")]
    if names:
        ensure_synthetic_dataset(cfg, names=names)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


# ------------------------------------------------------------------------------------------------ trainer
class Trainer:
    """``Trainer(cfg, resume=...).train()``; works in one process or in every rank of a process group."""

    def __init__(self, cfg, resume: bool = False, log_period: int = 20, find_unused_parameters: bool = True):
        self.cfg = cfg
        self.output_dir = str(cfg.OUTPUT_DIR)
        self.max_iter = int(cfg.SOLVER.MAX_ITER)
        self.log_period = log_period
        self.rank, self.world_size = comm.get_rank(), comm.get_world_size()
        if int(cfg.SOLVER.IMS_PER_BATCH) % self.world_size != 0:
            raise ValueError(f"SOLVER.IMS_PER_BATCH={cfg.SOLVER.IMS_PER_BATCH} (total over all processes) "
                             f"is not divisible by the number of processes {self.world_size}")
        self.device = training_device(cfg.MODEL.DEVICE)
        configure_cpu_threads(self.device)
        self.amp, self.amp_dtype = amp_settings(cfg, self.device)

        if comm.is_main_process():
            os.makedirs(self.output_dir, exist_ok=True)
        comm.synchronize()
        self.seed = resolve_seed(int(cfg.SEED))
        logger.info("Seed %d (SEED=%d), %d process(es), device %s", self.seed, cfg.SEED, self.world_size,
                    self.device)
        seed_all(self.seed + self.rank)  # the model init is identical anyway: DDP broadcasts rank 0's weights
        if comm.is_main_process():
            prepare_datasets(cfg)
        comm.synchronize()

        model = build_model(cfg).to(self.device)
        model.train()
        self.optimizer = build_optimizer(cfg, model)
        self.scheduler = build_lr_scheduler(cfg, self.optimizer)
        # float16 needs loss scaling; bfloat16 has float32's exponent range and does not
        self.grad_scaler = torch.amp.GradScaler("cuda", enabled=self.amp and self.amp_dtype == torch.float16)
        self.start_iter = 0
        self._iter = 0
        self._rng_to_restore: Optional[Dict[str, Any]] = None
        self._load_start_state(model, resume)
        if self.world_size > 1:
            model = DistributedDataParallel(
                model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                # buffers (BN running stats of the tiny model) are synced from rank 0 at every forward,
                # DDP's default; _sync_buffers() does it once more before each checkpoint
                find_unused_parameters=find_unused_parameters,
            )
        self.model = model
        self.data_loader = build_train_loader(
            cfg, rank=self.rank, world_size=self.world_size, seed=self.seed, start_iter=self.start_iter
        )
        if comm.is_main_process():
            write_text_atomic(os.path.join(self.output_dir, "config.yaml"), cfg.dump())

    # -- start state --------------------------------------------------------------------------------
    def _load_start_state(self, model: torch.nn.Module, resume: bool) -> None:
        last = find_last_checkpoint(self.output_dir)
        if resume and last is not None:
            ckpt = load_training_checkpoint(last)
            model.load_state_dict(ckpt["model"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.scheduler.load_state_dict(ckpt["scheduler"])
            if "grad_scaler" in ckpt:
                self.grad_scaler.load_state_dict(ckpt["grad_scaler"])
            self.start_iter = int(ckpt["iteration"]) + 1
            rng = ckpt.get("rng") or []
            if len(rng) == self.world_size:
                self._rng_to_restore = rng[self.rank]
            else:
                logger.warning("Checkpoint holds RNG states of %d processes, this run has %d: RNG not restored, "
                               "so the run continues correctly but not bit-identically", len(rng), self.world_size)
            logger.info("Resuming from %s at iteration %d", last, self.start_iter)
            return
        if resume:
            logger.info("--resume: no checkpoint in %s, training starts from scratch", self.output_dir)
        elif last is not None:
            logger.warning("%s already holds checkpoints (last: %s) but --resume was not given: training starts "
                           "over from iteration 0 and overwrites them", self.output_dir, os.path.basename(last))
        check_backbone_initialisation(self.cfg)
        if self.cfg.MODEL.WEIGHTS:
            load_initial_weights(self.cfg, model, self.cfg.MODEL.WEIGHTS)

    # -- checkpoints and evaluation -----------------------------------------------------------------
    def _sync_buffers(self) -> None:
        """Give every rank rank 0's buffers (BN running stats), so that all ranks hold the same model."""
        if self.world_size == 1:
            return
        for buf in unwrap(self.model).buffers():
            torch.distributed.broadcast(buf.data, src=0)

    def save_checkpoint(self, iteration: int, name: Optional[str] = None) -> None:
        self._sync_buffers()
        rng_states = comm.all_gather_object(capture_rng_state())  # collective: every rank calls it
        if comm.is_main_process():
            save_training_checkpoint(
                self.output_dir, name or checkpoint_name(iteration), unwrap(self.model), self.cfg,
                self.optimizer, self.scheduler, self.grad_scaler, iteration, rng_states,
            )
        comm.synchronize()

    def evaluate(self, tag: str, writer: Optional[MetricsWriter] = None, iteration: int = 0) -> Dict[str, Any]:
        """Evaluate on every ``DATASETS.TEST`` on the main process; writes ``OUTPUT_DIR/metrics_{tag}.json``."""
        results: Dict[str, Any] = {}
        if comm.is_main_process() and len(self.cfg.DATASETS.TEST) > 0:
            # evaluation must not move the training RNG streams, or resumed runs would diverge
            rng = capture_rng_state()
            results = evaluate_datasets(self.cfg, unwrap(self.model), self.output_dir, tag)
            restore_rng_state(rng)
            if writer is not None:
                writer.write_eval(iteration, results)
        comm.synchronize()
        return results

    # -- the loop -----------------------------------------------------------------------------------
    def run_step(self, batch) -> Dict[str, float]:
        autocast = torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp else nullcontext()
        try:
            with autocast:
                loss_dict = self.model(batch)
        except FloatingPointError as err:  # the model's own divergence checks: say when it happened
            raise FloatingPointError(f"Training diverged at iteration {self._iter}: {err}. Training stopped; "
                                     "no checkpoint was written for this iteration.") from err
        if not isinstance(loss_dict, dict) or not loss_dict:
            raise TypeError("the model must return a non-empty dict of losses in training mode")
        total = sum(loss_dict.values())
        reduced = comm.reduce_loss_dict(loss_dict)  # same values on every rank, so all ranks stop together
        bad = [k for k, v in reduced.items() if not np.isfinite(v)]
        if bad:
            raise FloatingPointError(
                f"Loss became NaN or infinite at iteration {self._iter}: {', '.join(bad)} "
                f"(losses: {reduced}). Training stopped; no checkpoint was written for this iteration.")
        self.optimizer.zero_grad(set_to_none=True)
        self.grad_scaler.scale(total).backward()
        if bool(self.cfg.SOLVER.CLIP_GRADIENTS.ENABLED):
            self.grad_scaler.unscale_(self.optimizer)
            clip_gradients(self.cfg, (p for g in self.optimizer.param_groups for p in g["params"]))
        self.grad_scaler.step(self.optimizer)
        self.grad_scaler.update()
        reduced["total_loss"] = float(sum(reduced.values()))
        return reduced

    def train(self) -> Dict[str, Any]:
        cfg, main = self.cfg, comm.is_main_process()
        writer = MetricsWriter(self.output_dir, self.start_iter, self.log_period) if main else None
        checkpoint_period = int(cfg.SOLVER.CHECKPOINT_PERIOD)
        eval_period = int(cfg.TEST.EVAL_PERIOD)
        data_iter = iter(self.data_loader)
        if self._rng_to_restore is not None:  # after the loader iterator exists: it may draw from the RNG
            restore_rng_state(self._rng_to_restore)
            self._rng_to_restore = None
        logger.info("Training iterations %d..%d", self.start_iter, self.max_iter - 1)
        bar = tqdm(total=self.max_iter, initial=self.start_iter, disable=not main, desc="train",
                   dynamic_ncols=True)
        try:
            for self._iter in range(self.start_iter, self.max_iter):
                it = self._iter
                t0 = time.perf_counter()
                batch = next(data_iter)
                data_time = time.perf_counter() - t0
                lr = self.optimizer.param_groups[0]["lr"]
                losses = self.run_step(batch)
                self.scheduler.step()
                if main:
                    scalars = dict(losses, lr=lr, data_time=data_time, time=time.perf_counter() - t0)
                    writer.write(it, scalars, force_jsonl=it == self.max_iter - 1)
                    bar.set_postfix(loss=f"{losses['total_loss']:.3f}", lr=f"{lr:.2e}", refresh=False)
                    bar.update(1)
                last = it == self.max_iter - 1
                if checkpoint_period > 0 and (it + 1) % checkpoint_period == 0 and not last:
                    self.save_checkpoint(it)
                if eval_period > 0 and (it + 1) % eval_period == 0 and not last:
                    self.evaluate(f"iter{it:07d}", writer, it)
        except BaseException:
            if writer is not None:
                writer.close()
            raise
        finally:
            bar.close()
        # the final checkpoint carries the full state, so --resume after completion finds nothing left to do
        self.save_checkpoint(self.max_iter - 1, FINAL_CHECKPOINT_NAME)
        results = self.evaluate("final", writer, self.max_iter - 1)
        if main:
            writer.close()
            plot_loss_curve(self.output_dir)
        return results


# ------------------------------------------------------------------------------------------- evaluation
def evaluate_datasets(cfg, model: torch.nn.Module, output_dir: str, tag: str) -> Dict[str, Any]:
    """``evaluate_model`` on each test dataset; the metrics go to ``output_dir/metrics_{tag}.json``."""
    was_training = model.training
    model.eval()
    results: Dict[str, Any] = {}
    try:
        with torch.no_grad():
            for name in cfg.DATASETS.TEST:
                out_dir = os.path.join(output_dir, "eval", tag, name)
                os.makedirs(out_dir, exist_ok=True)
                results[name] = evaluate_model(cfg, model, name, out_dir)
    finally:
        model.train(was_training)
    path = os.path.join(output_dir, f"metrics_{tag}.json")
    save_metrics_json(results, path)  # NaN (e.g. no unknown GT) -> null: valid JSON
    logger.info("Evaluation %s written to %s", tag, path)
    return results


def evaluate_weights(cfg) -> Dict[str, Any]:
    """``--eval-only``: build the model, load ``MODEL.WEIGHTS``, evaluate on ``DATASETS.TEST``."""
    if not cfg.MODEL.WEIGHTS:
        raise ValueError("--eval-only needs MODEL.WEIGHTS (a checkpoint of ours or the authors' .pth/.pkl)")
    results: Dict[str, Any] = {}
    if comm.is_main_process():
        device = training_device(cfg.MODEL.DEVICE)
        os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
        prepare_datasets(cfg)
        model = build_model(cfg).to(device)
        load_model_weights(model, cfg.MODEL.WEIGHTS)
        results = evaluate_datasets(cfg, model, cfg.OUTPUT_DIR, "eval")
    comm.synchronize()
    return results

