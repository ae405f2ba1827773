"""Running the training loop in several processes with PyTorch's distributed engine.

Two ways in:
- under ``torchrun`` (or any launcher that sets RANK/WORLD_SIZE/LOCAL_RANK), every process
  already exists: :func:`env_world` reads them and :func:`init` joins the group;
- with ``trainer.devices > 1`` on one machine, :func:`spawn` starts the processes itself.
The backend is NCCL on CUDA and gloo on CPU.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def env_world() -> tuple[int, int, int]:
    """(rank, world size, local rank) from the launcher's environment; (0, 1, 0) without one."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


def backend(use_cuda: bool) -> str:
    """nccl for CUDA, gloo otherwise."""
    return "nccl" if use_cuda and dist.is_nccl_available() else "gloo"


def init(use_cuda: bool, init_method: str | None = None, rank: int | None = None, world: int | None = None) -> None:
    """Join the process group (no-op when already joined)."""
    if dist.is_initialized():
        return
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank or 0)))
    kwargs = {"init_method": init_method, "rank": rank, "world_size": world} if init_method else {}
    dist.init_process_group(backend(use_cuda), **kwargs)


def sum_over_ranks(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` summed element-wise over the group's processes (in place); unchanged
    outside a group of more than one."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def gather_to_first(obj) -> list:
    """Every process's ``obj``, in rank order, on rank 0 (an empty list on the others);
    ``[obj]`` outside a group of more than one."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return [obj]
    shares = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(obj, shares, dst=0)
    return shares or []


def _entry(rank: int, fn: Callable, world: int, use_cuda: bool, rendezvous: str, args: tuple) -> None:
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world)})
    init(use_cuda, f"file://{rendezvous}", rank, world)
    try:
        fn(rank, world, *args)
    finally:
        dist.destroy_process_group()


def spawn(fn: Callable, world: int, use_cuda: bool, *args) -> None:
    """Run ``fn(rank, world, *args)`` in ``world`` new processes joined in one group.

    ``fn`` and ``args`` must be picklable (the processes are spawned, not forked).
    """
    with tempfile.TemporaryDirectory(prefix="hmsa-ddp-") as tmp:
        rendezvous = str(Path(tmp) / "rendezvous")
        mp.start_processes(_entry, args=(fn, world, use_cuda, rendezvous, args), nprocs=world, start_method="spawn")
