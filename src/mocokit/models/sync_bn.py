"""SyncBN: BatchNorm whose training statistics come from the global batch, over all processes (MoCo v3).

v3 normalises its projector and predictor (and, for ResNets, the backbone) with statistics of the whole global batch,
so that 4096 images on 16 GPUs train like 4096 images on one. PyTorch's `nn.SyncBatchNorm` does this with fused GPU
kernels but refuses CPU tensors (and DistributedDataParallel refuses it on CPU modules). `sync_batch_norms` therefore
uses it on NCCL (GPU) runs, and `GlobalBatchNorm`, a plain implementation over differentiable all-reduces, on gloo
(CPU) runs: the same computation, which is what lets the tests check the equivalence without a GPU.

Not for v1/v2: their backbone BN must stay local to each process for shuffle BN to work (moco #46).
"""

from __future__ import annotations

import torch
from torch import nn

from mocokit import distributed
from mocokit.models.shuffle_bn import SplitBatchNorm2d


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm over the global batch of all processes, for any device and backend. Same parameters and buffers as
    BatchNorm1d/2d, so state dicts move freely between synced and plain models; in eval mode, or on one process, it
    is a plain BatchNorm."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {x.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and distributed.is_distributed()):
            return super().forward(x)
        return self._global_batch_norm(x)

    def _global_batch_norm(self, x: torch.Tensor) -> torch.Tensor:
        """Two-pass mean and variance over every rank's batch (N×C or N×C×H×W). The all-reduces pass gradients
        back to every rank, so each rank's backward includes the other ranks' dependence on its samples."""
        reduce_dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)  # broadcasts a C vector over N×C×...
        count = distributed.all_reduce_sum_(torch.tensor(x.numel() // x.shape[1], dtype=x.dtype, device=x.device))
        mean = distributed.all_reduce_sum_with_grad(x.sum(reduce_dims)) / count  # C
        centered = x - mean.view(shape)
        var = distributed.all_reduce_sum_with_grad(centered.square().sum(reduce_dims)) / count  # C, biased
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.lerp_(mean.detach(), factor)
                self.running_var.lerp_(var.detach() * count / (count - 1), factor)  # unbiased, as BatchNorm
        out = centered * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out


SYNCED = (nn.SyncBatchNorm, GlobalBatchNorm)


def sync_batch_norms(module: nn.Module, native: bool = False) -> nn.Module:
    """Replace every BatchNorm in `module` by a synced one with the same parameters and statistics, in place:
    torch's nn.SyncBatchNorm when `native` (NCCL runs), else GlobalBatchNorm. Returns `module` (or its replacement
    when `module` itself is a BatchNorm). Split BatchNorms with several groups (one-device shuffle BN) are left
    alone: their statistics are local on purpose."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, SYNCED):
        if isinstance(module, SplitBatchNorm2d) and module.num_splits > 1:
            return module
        kind = nn.SyncBatchNorm if native else GlobalBatchNorm
        synced = kind(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
        synced.load_state_dict(module.state_dict())
        synced.train(module.training)
        for name, parameter in module.named_parameters():  # a momentum encoder's BN stays out of the optimiser
            getattr(synced, name).requires_grad_(parameter.requires_grad)
        return synced.to(_device_of(module))
    for name, child in module.named_children():
        replacement = sync_batch_norms(child, native)
        if replacement is not child:
            setattr(module, name, replacement)
    return module


def _device_of(module: nn.Module) -> torch.device:
    tensors = [*module.parameters(), *module.buffers()]
    return tensors[0].device if tensors else torch.device("cpu")

