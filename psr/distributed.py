"""Distributed helpers: one code path for 1 process and torchrun (gloo on CPU, nccl on GPU)."""

from __future__ import annotations

import os
from typing import Any, Sequence, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else int(os.environ.get("RANK", 0))


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else int(os.environ.get("WORLD_SIZE", 1))


def is_rank0() -> bool:
    return get_rank() == 0


def print0(*args: Any, **kwargs: Any) -> None:
    """print on rank 0 only."""
    if is_rank0():
        print(*args, **kwargs, flush=True)


def default_device(device: str | None = None) -> torch.device:
    """``device`` as given, else cuda:<local rank> when CUDA is available, else cpu."""
    if device and device != "auto":
        if device == "cuda":
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def init_distributed(device: torch.device | None = None) -> bool:
    """Join the process group when launched by torchrun (``WORLD_SIZE`` > 1).

    Backend: nccl for CUDA devices, gloo otherwise. Returns whether a group is active.
    """
    if is_distributed():
        return True
    if int(os.environ.get("WORLD_SIZE", 1)) <= 1:
        return False
    device = device or default_device()
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend)
    return True


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def destroy() -> None:
    if is_distributed():
        dist.destroy_process_group()


def shard(items: Sequence[T], rank: int | None = None, world_size: int | None = None) -> list[T]:
    """Items ``rank, rank + world, ...``: disjoint shards whose union is ``items``."""
    rank = get_rank() if rank is None else rank
    world_size = get_world_size() if world_size is None else world_size
    return list(items[rank::world_size])


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (a one-element list without a process group)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out
