"""Data-parallel training with torch.distributed (``torchrun``): who this process is, the
model wrapped as DistributedDataParallel, and this rank's share of a global batch."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of processes (0 and 1 outside torch.distributed)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def wrap(model: torch.nn.Module, device: str) -> torch.nn.Module:
    """`model` as DistributedDataParallel when there are several processes, else itself."""
    if rank_and_world()[1] == 1:
        return model
    ids = [torch.device(device).index or 0] if torch.device(device).type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def shard(draw, gen: torch.Generator, rank: int, world: int) -> tuple[tuple, torch.Tensor]:
    """This rank's part of the step's global batch. Every rank draws with the same generator,
    so all agree on the batch: rows ``rank::world`` of a batch of rows (the mean loss over
    equal shares, averaged by DDP, is the mean over the whole batch); of batches that cannot
    be split by rows (``draw.splits_by_rows`` False: collated graphs), each rank takes one
    of ``world`` drawn."""
    if world == 1:
        return draw(gen)
    if not getattr(draw, "splits_by_rows", True):
        return [draw(gen) for _ in range(world)][rank]
    inputs, target = draw(gen)
    if len(target) % world:
        raise ValueError(f"a batch of {len(target)} rows does not split into {world} equal shares; "
                         f"choose a batch size divisible by the number of processes")
    return tuple(t[rank::world] for t in inputs), target[rank::world]


def init_from_env() -> bool:
    """Join the process group torchrun describes in the environment (gloo on CPU, NCCL on
    GPUs); False when not launched by torchrun."""
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) == 1 or dist.is_initialized():
        return dist.is_initialized()
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return True
