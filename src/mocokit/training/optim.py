"""Optimisers of the MoCo recipes: SGD (v1/v2), LARS (v3 ResNet), AdamW (v3 ViT), with weight-decay groups."""

from __future__ import annotations

import torch
from torch import nn

from mocokit.training.config import OptimConfig


class LARS(torch.optim.Optimizer):
    """LARS as in MoCo v3 / BYOL (You et al. 2017): per tensor with ndim > 1,
    dp = g + wd·p;  dp ← dp · η·‖p‖/‖dp‖ (1 when either norm is 0);  mu ← m·mu + dp;  p ← p − lr·mu.
    Biases and normalisation parameters (ndim ≤ 1) get neither weight decay nor trust-ratio scaling."""

    def __init__(self, params, lr: float, weight_decay: float = 0.0, momentum: float = 0.9,
                 trust_coefficient: float = 0.001) -> None:
        defaults = dict(lr=lr, weight_decay=weight_decay, momentum=momentum, trust_coefficient=trust_coefficient)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                dp = p.grad
                if p.ndim > 1:
                    dp = dp.add(p, alpha=group["weight_decay"])
                    param_norm, update_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(dp)
                    one = torch.ones_like(param_norm)
                    trust = torch.where(
                        (param_norm > 0) & (update_norm > 0),
                        group["trust_coefficient"] * param_norm / update_norm,
                        one,
                    )
                    dp = dp.mul(trust)
                state = self.state[p]
                if "mu" not in state:
                    state["mu"] = torch.zeros_like(p)
                state["mu"].mul_(group["momentum"]).add_(dp)
                p.add_(state["mu"], alpha=-group["lr"])
        return loss


def scaled_learning_rate(cfg: OptimConfig, global_batch: int) -> float:
    """The linear scaling rule: base lr × global batch / 256 (or the base lr itself when scale_lr is off)."""
    return cfg.lr * global_batch / 256 if cfg.scale_lr else cfg.lr


def parameter_groups(model: nn.Module, weight_decay: float, no_decay_bias_and_norm: bool) -> list[dict]:
    """Trainable parameters in one group, or two when biases and norm parameters (ndim ≤ 1) skip weight decay."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not no_decay_bias_and_norm:
        return [{"params": params, "weight_decay": weight_decay}]
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, cfg: OptimConfig, lr: float) -> torch.optim.Optimizer:
    """The optimiser of `cfg.name` over `model`'s trainable parameters (frozen ones, the momentum encoder's
    among them, are left out), starting at learning rate `lr` (the schedule sets it every step)."""
    groups = parameter_groups(model, cfg.weight_decay, cfg.no_decay_bias_and_norm)
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.name == "lars":
        return LARS(groups, lr=lr, weight_decay=cfg.weight_decay, momentum=cfg.momentum,
                    trust_coefficient=cfg.lars_trust)
    return torch.optim.AdamW(groups, lr=lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
