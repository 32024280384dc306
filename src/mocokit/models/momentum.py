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
def momentum_update_(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """θ_target ← m·θ_target + (1−m)·θ_online for every parameter, in a few fused foreach kernels.

    Parameters only, as the official code: each encoder's BatchNorm running statistics come from its own forward
    passes. `lerp` with weight (1−m) is exactly a copy at m = 0 and exactly a no-op at m = 1.
    """
    target_params = list(target.parameters())
    online_params = [p.detach() for p in online.parameters()]
    if len(target_params) != len(online_params):
        raise ValueError("momentum encoder and query encoder have different parameter lists")
    torch._foreach_lerp_(target_params, online_params, 1.0 - float(momentum))


def cosine_momentum(progress: float, base_momentum: float) -> float:
    """MoCo v3's momentum at training progress e/E in [0, 1]: m0 at the start rising to 1 on a half-cosine,
    m = 1 − ½·(1 + cos(π·e/E))·(1 − m0), set every iteration."""
    progress = min(max(progress, 0.0), 1.0)
    return 1.0 - 0.5 * (1.0 + math.cos(math.pi * progress)) * (1.0 - base_momentum)
