"""Data-parallel training over processes (``torch.distributed``; gloo on CPU, NCCL on GPUs).

Synchronous data parallelism as DDP does it, written for the models' own loops: every rank holds
the same model (same seed), walks the same shuffled order of users, and takes its share of each
global batch (rows ``rank::world``); its loss is scaled by its share of the batch, so the summed
gradient after :func:`all_reduce_grads` is the single-process gradient of the whole batch (up to
float summation order and each rank's own dropout / sampling noise). Every rank then takes the
same optimiser step. Validation runs on every rank (it is deterministic), so early stopping agrees.

:func:`spawn` runs a function on `world_size` local processes (what ``torchrun`` /
``metaflow-torchrun``'s ``@torchrun`` do across machines, which set the same environment
variables: ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``).
"""

from __future__ import annotations

import os
import pickle
import socket
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist


def active() -> bool:
    """Whether this process is one rank of an initialised process group of more than one."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank_and_world() -> tuple[int, int]:
    return (dist.get_rank(), dist.get_world_size()) if active() else (0, 1)


def my_rows(idx: np.ndarray) -> np.ndarray:
    """This rank's share of a global batch of row ids (all of them outside a process group)."""
    rank, world = rank_and_world()
    return idx[rank::world]


def all_reduce_grads(params) -> None:
    """Sum every parameter's gradient over the ranks (one flat buffer: one collective per step)."""
    if not active():
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset:offset + n].view_as(g))
        offset += n


def all_reduce_sum(value: torch.Tensor) -> torch.Tensor:
    if active():
        dist.all_reduce(value)
    return value


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, fn: Callable, args: tuple, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        result = fn(*args)
        if rank == 0:
            with open(out, "wb") as f:
                pickle.dump(result, f)
        # every rank done with its collectives before any tears the group down: a rank that
        # destroys it while its peer's gloo threads still work aborts (SIGABRT, "terminate called
        # without an active exception")
        dist.barrier()
    finally:
        dist.destroy_process_group()


def spawn(fn: Callable, world_size: int, *args) -> Any:
    """Run ``fn(*args)`` on `world_size` local gloo processes; rank 0's return value (picklable)."""
    import tempfile

    import torch.multiprocessing as mp

    # rank 0's result goes through a file: a queue's pipe holds 64 KB, and a larger result would
    # block rank 0 in put() while this process waits in join() -- a deadlock
    with tempfile.TemporaryDirectory(prefix="recsys-spawn-") as tmp:
        out = os.path.join(tmp, "result.pkl")
        mp.start_processes(_worker, args=(world_size, _free_port(), fn, args, out), nprocs=world_size,
                           join=True, start_method="spawn")
        with open(out, "rb") as f:
            return pickle.load(f)
