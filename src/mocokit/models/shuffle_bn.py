"""Shuffle BN (He et al. 2020, section 3.3): stop the encoder from "cheating" through batch statistics.

A query and its positive key would otherwise be normalised with statistics of the same set of images, a signal that
tells which key is the positive and lets the loss fall without learning good features. The fix has two parts:
- `shuffle_batch` / `unshuffle_batch`: the key batch is permuted before the key encoder and put back after it. On
  several processes the permutation runs over the gathered global batch and each rank encodes its slice (the official
  recipe); on one process it is a plain permutation.
- `SplitBatchNorm2d`: BatchNorm whose statistics are computed over `num_splits` separate groups of the batch. On one
  device this is what gives the shuffle its effect: without groups every image shares one set of statistics and
  permuting changes nothing (the official CIFAR demo uses 8 groups). With P processes each process is a group.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from mocokit import distributed


@torch.no_grad()
def shuffle_batch(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Shuffle the global batch across ranks. x: N×... local -> (N×... this rank's shuffled slice, unshuffle index
    of length P·N). The permutation is drawn on rank 0 and broadcast, so all ranks agree."""
    x_global = distributed.all_gather_concat(x)  # (P·N)×...
    permutation = torch.randperm(x_global.shape[0], device=x.device)
    distributed.broadcast_(permutation, src=0)
    unshuffle_index = torch.argsort(permutation)
    local = permutation.view(distributed.world_size(), -1)[distributed.rank()]  # N indices into the global batch
    return x_global[local], unshuffle_index


@torch.no_grad()
def unshuffle_batch(y: torch.Tensor, unshuffle_index: torch.Tensor) -> torch.Tensor:
    """Undo `shuffle_batch` on the encoder's output: y is this rank's N×... slice; returns the rows of the N images
    this rank passed to `shuffle_batch`, in their original order."""
    y_global = distributed.all_gather_concat(y)  # (P·N)×..., row j encodes global image permutation[j]
    local = unshuffle_index.view(distributed.world_size(), -1)[distributed.rank()]
    return y_global[local]


class SplitBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d that, in training, normalises each of `num_splits` groups of the batch with that group's own
    statistics (group j holds samples j, j+s, j+2s, ...). Running statistics are averaged over the groups; in eval
    mode it is a plain BatchNorm2d, so a trained model loads into one with the same state dict."""

    def __init__(self, num_features: int, num_splits: int, **kwargs) -> None:
        super().__init__(num_features, **kwargs)
        self.num_splits = num_splits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.num_splits == 1:
            return super().forward(x)
        n, c, h, w = x.shape
        s = self.num_splits
        if n % s:
            raise ValueError(
                f"a batch of {n} cannot be split into model.bn_splits={s} BatchNorm groups: use a per-process batch "
                f"size that is a multiple of {s}, or change model.bn_splits"
            )
        if self.track_running_stats:
            self.num_batches_tracked.add_(1)
        momentum = 0.0 if self.momentum is None else self.momentum
        if torch.compiler.is_compiling():
            return self._grouped_forward(x, momentum)
        return self._reshaped_forward(x, momentum)

    def _reshaped_forward(self, x: torch.Tensor, momentum: float) -> torch.Tensor:
        """The eager form (the official SplitBatchNorm's): one fused native BatchNorm over the batch reshaped so
        that each group's channels are channels of their own."""
        n, c, h, w = x.shape
        s = self.num_splits
        running_mean = self.running_mean.repeat(s) if self.running_mean is not None else None
        running_var = self.running_var.repeat(s) if self.running_var is not None else None
        # (N, C, H, W) -> (N/s, s·C, H, W): channel block j of the new layout holds the samples n ≡ j (mod s).
        out = F.batch_norm(
            x.reshape(n // s, s * c, h, w),
            running_mean,
            running_var,
            self.weight.repeat(s) if self.weight is not None else None,
            self.bias.repeat(s) if self.bias is not None else None,
            True,
            momentum,
            self.eps,
        ).view(n, c, h, w)
        if running_mean is not None:
            with torch.no_grad():
                self.running_mean.copy_(running_mean.view(s, c).mean(dim=0))
                self.running_var.copy_(running_var.view(s, c).mean(dim=0))
        return out

    def _grouped_forward(self, x: torch.Tensor, momentum: float) -> torch.Tensor:
        """The same normalisation written for torch.compile: statistics over a 5-D view of the batch, (N/s)×s×C×H×W,
        which is a view in both memory formats. The eager form's (N/s)×(s·C)×H×W reshape merges the group and channel
        dimensions, which costs Inductor modular index arithmetic in every kernel that touches it: about 4x the
        compile time and slower kernels (README, Performance; benchmarks/compile_profile.py). Eager keeps the fused
        native kernel: this form is slower there, and the eager numerics stay those of the official SplitBatchNorm."""
        n, c, h, w = x.shape
        s = self.num_splits
        groups = x.view(n // s, s, c, h, w)  # sample i·s + j -> [i, j]: group j holds the samples n ≡ j (mod s)
        # 1×s×C×1×1 statistics in float32 also under autocast (as the native kernel); the biased variance
        var, mean = torch.var_mean(groups.to(torch.promote_types(x.dtype, torch.float32)), dim=(0, 3, 4),
                                   correction=0, keepdim=True)
        scale = torch.rsqrt(var + self.eps)
        if self.weight is not None:
            scale = scale * self.weight.view(1, 1, c, 1, 1)
        shift = -mean * scale
        if self.bias is not None:
            shift = shift + self.bias.view(1, 1, c, 1, 1)
        out = (groups * scale + shift).to(x.dtype).reshape(n, c, h, w)
        if self.running_mean is not None:
            with torch.no_grad():  # each group's update averaged over the groups, as the eager form; unbiased var
                count = (n // s) * h * w
                unbiased_var = var.view(s, c).mean(dim=0) * (count / max(count - 1, 1))
                self.running_mean.lerp_(mean.view(s, c).mean(dim=0).to(self.running_mean.dtype), momentum)
                self.running_var.lerp_(unbiased_var.to(self.running_var.dtype), momentum)
        return out


def split_batch_norms(module: nn.Module, num_splits: int) -> nn.Module:
    """Replace every plain `nn.BatchNorm2d` in `module` by a `SplitBatchNorm2d` with the same state (in place;
    returns `module`). Subclasses that fuse extra work (e.g. timm's BatchNormAct2d) are left alone, with a warning."""
    if num_splits == 1:
        return module
    skipped = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.BatchNorm2d:
                split = SplitBatchNorm2d(
                    child.num_features,
                    num_splits,
                    eps=child.eps,
                    momentum=child.momentum,
                    affine=child.affine,
                    track_running_stats=child.track_running_stats,
                )
                split.load_state_dict(child.state_dict())
                setattr(parent, name, split)
            elif isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(child, SplitBatchNorm2d):
                skipped += 1
    if skipped:
        warnings.warn(
            f"{skipped} BatchNorm layers of a type other than nn.BatchNorm2d were not split; shuffle BN protects "
            "them only across processes",
            stacklevel=2,
        )
    return module
