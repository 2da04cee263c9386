"""Process-group set-up and the few collectives the trainer needs.

Three ways to run:
- one process (no ``torch.distributed``);
- ``torchrun`` (or any launcher that sets ``RANK``/``WORLD_SIZE``/``MASTER_ADDR``): ``init_from_env``;
- ``launch(fn, num_gpus, ...)``: spawns ``num_gpus`` local processes itself, like detectron2's ``launch``
  (multi-node: run it on every machine with ``--machine-rank`` and the same ``--dist-url``).
Backend: NCCL when training on CUDA, gloo on CPU.
"""
from __future__ import annotations

import datetime
import logging
import os
import socket
from typing import Any, Callable, Dict, List, Sequence

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

logger = logging.getLogger(__name__)

# Evaluation runs on rank 0 while the others wait at a barrier; a COCO-sized evaluation can take longer
# than the default collective timeout, so allow more.
PROCESS_GROUP_TIMEOUT = datetime.timedelta(hours=2)

_LOCAL_RANK = 0
_LOCAL_WORLD_SIZE = 1


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def get_local_rank() -> int:
    return _LOCAL_RANK


def get_local_world_size() -> int:
    """Processes of this job on this machine (to share the CPU cores between them)."""
    return _LOCAL_WORLD_SIZE


def is_main_process() -> bool:
    return get_rank() == 0


def synchronize() -> None:
    if is_distributed() and get_world_size() > 1:
        if dist.get_backend() == dist.Backend.NCCL and torch.cuda.is_available():
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


def backend_for_device(device: str) -> str:
    return "nccl" if str(device).startswith("cuda") else "gloo"


def _collective_device() -> torch.device:
    if is_distributed() and dist.get_backend() == dist.Backend.NCCL:
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def reduce_loss_dict(losses: Dict[str, torch.Tensor]) -> Dict[str, float]:
    """Mean of every loss over all ranks, as Python floats (for logging and the NaN check)."""
    keys = sorted(losses)
    values = torch.stack([losses[k].detach().float().reshape(()) for k in keys])
    if get_world_size() > 1:
        values = values.to(_collective_device())
        dist.all_reduce(values)
        values = values / get_world_size()
    return {k: float(v) for k, v in zip(keys, values.cpu().tolist())}


def all_gather_object(obj: Any) -> List[Any]:
    if get_world_size() == 1:
        return [obj]
    out: List[Any] = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_int(value: int, src: int = 0) -> int:
    if get_world_size() == 1:
        return int(value)
    t = torch.tensor([int(value)], dtype=torch.int64, device=_collective_device())
    dist.broadcast(t, src)
    return int(t.item())


def init_from_env(backend: str) -> bool:
    """Join the process group described by torchrun's environment variables. False when none is set."""
    global _LOCAL_RANK, _LOCAL_WORLD_SIZE
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return False
    if is_distributed():
        return True
    _LOCAL_RANK = int(os.environ.get("LOCAL_RANK", 0))
    _LOCAL_WORLD_SIZE = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"]))
    if backend == "nccl":
        torch.cuda.set_device(_LOCAL_RANK)
    dist.init_process_group(backend=backend, init_method="env://", timeout=PROCESS_GROUP_TIMEOUT)
    logger.info("Joined process group: rank %d / %d (%s)", get_rank(), get_world_size(), backend)
    return True


def _find_free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(
    local_rank: int,
    main_func: Callable,
    world_size: int,
    num_procs_per_machine: int,
    machine_rank: int,
    dist_url: str,
    backend: str,
    args: Sequence,
) -> None:
    global _LOCAL_RANK, _LOCAL_WORLD_SIZE
    _LOCAL_RANK = local_rank
    _LOCAL_WORLD_SIZE = num_procs_per_machine
    if backend == "nccl":
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(
                f"--num-gpus asks for {num_procs_per_machine} processes but this machine has only "
                f"{torch.cuda.device_count()} CUDA devices"
            )
        torch.cuda.set_device(local_rank)
    rank = machine_rank * num_procs_per_machine + local_rank
    dist.init_process_group(
        backend=backend, init_method=dist_url, world_size=world_size, rank=rank, timeout=PROCESS_GROUP_TIMEOUT
    )
    try:
        synchronize()
        main_func(*args)
    finally:
        dist.destroy_process_group()


def launch(
    main_func: Callable,
    num_procs_per_machine: int,
    num_machines: int = 1,
    machine_rank: int = 0,
    dist_url: str | None = None,
    backend: str = "gloo",
    args: Sequence = (),
) -> None:
    """Run ``main_func(*args)`` in ``num_procs_per_machine * num_machines`` processes (or in this one).

    Under torchrun (``WORLD_SIZE`` set) the process group comes from the environment and nothing is spawned.
    """
    if "WORLD_SIZE" in os.environ and "RANK" in os.environ:
        init_from_env(backend)
        try:
            main_func(*args)
        finally:
            if is_distributed():
                dist.destroy_process_group()
        return
    if num_procs_per_machine < 1 or num_machines < 1:
        raise ValueError("--num-gpus and --num-machines must be >= 1")
    if not 0 <= machine_rank < num_machines:
        raise ValueError(f"--machine-rank {machine_rank} must be in [0, {num_machines})")
    world_size = num_procs_per_machine * num_machines
    if world_size == 1:
        main_func(*args)
        return
    if dist_url is None or dist_url == "auto":
        if num_machines != 1:
            raise ValueError("--dist-url auto works on one machine only; give tcp://HOST:PORT of machine 0")
        dist_url = f"tcp://127.0.0.1:{_find_free_port()}"
    if backend == "nccl" and torch.cuda.device_count() < num_procs_per_machine:
        raise RuntimeError(
            f"--num-gpus {num_procs_per_machine} but only {torch.cuda.device_count()} CUDA devices are visible"
        )
    mp.start_processes(
        _worker,
        nprocs=num_procs_per_machine,
        args=(main_func, world_size, num_procs_per_machine, machine_rank, dist_url, backend, args),
        daemon=False,
        start_method="spawn",
    )
