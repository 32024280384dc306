"""The optimiser of a classifier: the new head at the scheduled lr and, for fine-tuning, the backbone too, either
at the same lr or with layer-wise lr decay (param groups with `lr_scale`, the convention of the training loops)."""

from __future__ import annotations

import torch
from torch import nn

from mocokit.errors import ConfigError
from mocokit.training.config import OptimConfig
from mocokit.training.optim import build_optimizer, parameter_groups


def layer_decay_groups(backbone: nn.Module, weight_decay: float, layer_decay: float) -> list[dict]:
    """Param groups of a layered backbone with `lr_scale` as in BEiT/MAE: with L blocks, block i (0-based) trains at
    layer_decay^(L - i) (the top block at layer_decay, one step below the head's 1), the embeddings (patch
    projection, class token) at layer_decay^(L + 1); the final norm goes with the top block. Layers come from the
    backbone's own description (timm's `group_matcher`, which MoCo's ViTs and timm models have); 1-D tensors and
    `no_weight_decay()` names get no weight decay. A backbone without that description (mocokit's ResNets) is a
    ConfigError."""
    from timm.optim import param_groups_layer_decay

    if not callable(getattr(backbone, "group_matcher", None)):
        raise ConfigError(f"finetune.layer_decay needs a backbone that describes its layers (a ViT or timm model); "
                          f"{type(backbone).__name__} does not: set finetune.layer_decay=null")
    no_decay = backbone.no_weight_decay() if callable(getattr(backbone, "no_weight_decay", None)) else ()
    groups = param_groups_layer_decay(backbone, weight_decay=weight_decay, no_weight_decay_list=no_decay,
                                      layer_decay=layer_decay)
    # timm gives the top block scale 1 (it counts the backbone alone); one more factor puts the new head above it.
    return [{**group, "lr_scale": group["lr_scale"] * layer_decay} for group in groups]


def classifier_optimizer(head: nn.Module, cfg: OptimConfig, lr: float, backbone: nn.Module | None = None,
                         layer_decay: float | None = None) -> torch.optim.Optimizer:
    """`cfg.name`'s optimiser (the engine's builder) over the head's parameters, plus, when `backbone` is given, its
    trainable parameters as extra groups: one or two (cfg.no_decay_bias_and_norm) at lr_scale 1, or the
    `layer_decay_groups`."""
    optimizer = build_optimizer(head, cfg, lr)
    if backbone is None:
        return optimizer
    if layer_decay is not None:
        groups = layer_decay_groups(backbone, cfg.weight_decay, layer_decay)
    else:
        groups = parameter_groups(backbone, cfg.weight_decay, cfg.no_decay_bias_and_norm)
    for group in groups:
        if group["params"]:
            optimizer.add_param_group(group)
    return optimizer
