"""Training checkpoints: what a run needs to continue exactly, saved atomically, found again on ``--resume``.

A training checkpoint is ``semseg_core.checkpoint.save_checkpoint``'s dict plus ``optimizer``, ``scheduler``,
``grad_scaler``, ``iteration`` (0-based index of the last finished iteration, as in detectron2, which also
names the file ``model_{iteration:07d}.pth``) and ``rng`` (one entry per rank). Everything is made of
tensors, numbers, strings, lists and dicts so that ``torch.load(weights_only=True)`` reads it back.
"""
from __future__ import annotations

import logging
import os
import random
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from semseg_core.atomic_io import atomic_open
from semseg_core.checkpoint import load_checkpoint, save_checkpoint

logger = logging.getLogger(__name__)

LAST_CHECKPOINT_FILE = "last_checkpoint"
FINAL_CHECKPOINT_NAME = "model_final.pth"


def checkpoint_name(iteration: int) -> str:
    return f"model_{iteration:07d}.pth"


# ---------------------------------------------------------------------------------------------- RNG state
def capture_rng_state() -> Dict[str, Any]:
    """Python, NumPy and torch (CPU + CUDA) generator states as tensors/lists/numbers."""
    version, py_state, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: Dict[str, Any] = {
        "python": {"version": int(version), "state": torch.tensor(py_state, dtype=torch.int64), "gauss": gauss},
        "numpy": {
            "name": str(np_name),
            "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "cached_gaussian": float(np_gauss),
        },
        "torch": torch.get_rng_state(),
        "cuda": [s for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else [],
    }
    return state


def restore_rng_state(state: Dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    npst = state["numpy"]
    np.random.set_state(
        (
            npst["name"],
            npst["keys"].numpy().astype(np.uint32),
            npst["pos"],
            npst["has_gauss"],
            npst["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda_states])
        else:
            logger.warning("CUDA RNG state saved for %d devices, %d visible: not restored",
                           len(cuda_states), torch.cuda.device_count())


# --------------------------------------------------------------------------------------- files on disk
def write_text_atomic(path: str, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


def find_last_checkpoint(output_dir: str) -> Optional[str]:
    """Path named by ``OUTPUT_DIR/last_checkpoint``, or None when there is none."""
    marker = os.path.join(output_dir, LAST_CHECKPOINT_FILE)
    if not os.path.isfile(marker):
        return None
    with open(marker) as f:
        name = f.read().strip()
    if not name:
        return None
    path = os.path.join(output_dir, name)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{marker} names {name!r}, which does not exist in {output_dir}")
    return path


def save_training_checkpoint(
    output_dir: str,
    name: str,
    model: torch.nn.Module,
    cfg,
    optimizer: torch.optim.Optimizer,
    scheduler,
    grad_scaler,
    iteration: int,
    rng_states: List[Dict[str, Any]],
) -> str:
    """Write ``OUTPUT_DIR/name`` atomically, then point ``last_checkpoint`` at it (also atomically).

    A failure while writing leaves the previous checkpoint and ``last_checkpoint`` untouched.
    """
    path = os.path.join(output_dir, name)
    save_checkpoint(
        path,
        model,
        cfg=cfg,
        optimizer=optimizer.state_dict(),
        scheduler=scheduler.state_dict(),
        grad_scaler=grad_scaler.state_dict(),
        iteration=int(iteration),
        rng=rng_states,
    )
    write_text_atomic(os.path.join(output_dir, LAST_CHECKPOINT_FILE), name)
    logger.info("Saved checkpoint %s (iteration %d)", path, iteration)
    return path


def load_training_checkpoint(path: str) -> Dict[str, Any]:
    ckpt = load_checkpoint(path, map_location="cpu")
    missing = [k for k in ("model", "optimizer", "scheduler", "iteration") if k not in ckpt]
    if missing:
        raise ValueError(f"{path} is not a training checkpoint of this engine (missing {missing}); "
                         "use MODEL.WEIGHTS to start from plain weights")
    return ckpt

