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
    dist.all_gather_single(gathered, tensor.contiguous())
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


def all_reduce_sum_(tensor: torch.Tensor) -> torch.Tensor:
    """Sum of `tensor` over ranks, in place (no gradient); returns it."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_max_(tensor: torch.Tensor) -> torch.Tensor:
    """Element-wise maximum of `tensor` over ranks, in place (no gradient); returns it."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor


def all_reduce_sum_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Differentiable sum over ranks: the gradient that reaches each rank's input is the sum of all ranks' output
    gradients, which is what a loss summed over ranks needs (SyncBN's global statistics)."""
    if not is_distributed():
        return tensor
    return _AllReduceSum.apply(tensor)


class _AllReduceSum(torch.autograd.Function):
    """y = Σ_ranks x; dL/dx = Σ_ranks dL/dy (every rank's output depends on every rank's input)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        summed = tensor.clone()
        dist.all_reduce(summed, op=dist.ReduceOp.SUM)
        return summed

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        summed = grad.contiguous().clone()
        dist.all_reduce(summed, op=dist.ReduceOp.SUM)
        return summed


def broadcast_object(value, src: int = 0):
    """Rank `src`'s `value` (any picklable object made by our own code) on every rank."""
    if not is_distributed():
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=src)
    return holder[0]


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def collective_device() -> torch.device:
    """Where small tensors for collectives live: NCCL only moves CUDA tensors, gloo CPU ones."""
    if is_distributed() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
