"""Every collective mocokit uses, in one place. Each is the identity when torch.distributed is not initialised or the
world has one process, so the algorithm code calls them unconditionally and runs the same on a CPU, one GPU or many.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def is_main_process() -> bool:
    return rank() == 0


@torch.no_grad()
def all_gather_concat(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate `tensor` (N×...) from every rank along dim 0, in rank order -> (world·N)×... . No gradient flows
    back through the gather (the official MoCo `concat_all_gather`); every rank must pass the same shape."""
    if not is_distributed():
        return tensor
    gathered = torch.empty(
        (world_size() * tensor.shape[0], *tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device
    )
    dist.all_gather_into_tensor(gathered, tensor.contiguous())
    return gathered


@torch.no_grad()
def broadcast_(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Overwrite `tensor` on every rank with rank `src`'s values (in place); returns it."""
    if is_distributed():
        dist.broadcast(tensor, src=src)
    return tensor


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Mean of `tensor` over ranks (a new tensor; used for logging metrics)."""
    if not is_distributed():
        return tensor
    reduced = tensor.detach().clone()
    dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
    return reduced / world_size()
