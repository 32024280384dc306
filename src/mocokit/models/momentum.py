"""The momentum (key) encoder: an exponential moving average of the query encoder, and the v3 momentum schedule."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


def make_momentum_copy(module: nn.Module) -> nn.Module:
    """A frozen deep copy of `module` to serve as its momentum encoder: same initial weights, no gradients."""
    twin = copy.deepcopy(module)
    for param in twin.parameters():
        param.requires_grad_(False)
    return twin


@torch.no_grad()
def momentum_update_(target: nn.Module, online: nn.Module, momentum: float | torch.Tensor) -> None:
    """θ_target ← m·θ_target + (1−m)·θ_online for every parameter, in a few fused foreach kernels.

    Parameters only, as the official code: each encoder's BatchNorm running statistics come from its own forward
    passes. Exactly a copy at m = 0 and exactly a no-op at m = 1.
    momentum: a Python float, or a 0-dim tensor (on any device the parameters' foreach kernels accept, e.g. theirs).
    A tensor is what a scheduled m (v3) should be under torch.compile: a float is baked into the compiled graph as a
    constant and every new value would recompile it, and reading a device tensor back as a float would sync.
    """
    target_params = list(target.parameters())
    online_params = [p.detach() for p in online.parameters()]
    if len(target_params) != len(online_params):
        raise ValueError("momentum encoder and query encoder have different parameter lists")
    if isinstance(momentum, torch.Tensor):
        # lerp's fused foreach form takes only a Python weight: m·θ_t + (1−m)·θ_o with tensor scalars instead.
        torch._foreach_mul_(target_params, momentum)
        torch._foreach_add_(target_params, torch._foreach_mul(online_params, 1.0 - momentum))
    else:
        torch._foreach_lerp_(target_params, online_params, 1.0 - float(momentum))


def cosine_momentum(progress: float, base_momentum: float) -> float:
    """MoCo v3's momentum at training progress e/E in [0, 1]: m0 at the start rising to 1 on a half-cosine,
    m = 1 − ½·(1 + cos(π·e/E))·(1 − m0), set every iteration."""
    progress = min(max(progress, 0.0), 1.0)
    return 1.0 - 0.5 * (1.0 + math.cos(math.pi * progress)) * (1.0 - base_momentum)
