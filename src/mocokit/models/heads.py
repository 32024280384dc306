"""The one MLP builder behind every MoCo head (v1 linear, v2 MLP, v3 projector and predictor)."""

from __future__ import annotations

from torch import nn


def mlp(dims: list[int], batch_norm: bool, bias: bool, last_bn: bool = False) -> nn.Sequential:
    """Linear layers through `dims` (dims[0] in, dims[-1] out), ReLU between them.

    batch_norm: hidden layers are Linear → BatchNorm1d → ReLU (v3) instead of Linear → ReLU (v2).
    last_bn: a BatchNorm1d(out, affine=False) after the last Linear (v3 projectors, v3 ViT predictor).
    """
    if len(dims) < 2:
        raise ValueError(f"an MLP needs at least input and output sizes, got {dims}")
    layers: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(d_in, d_out, bias=bias))
        if i < len(dims) - 2:
            if batch_norm:
                layers.append(nn.BatchNorm1d(d_out))
            layers.append(nn.ReLU(inplace=True))
        elif last_bn:
            layers.append(nn.BatchNorm1d(d_out, affine=False))
    return nn.Sequential(*layers)


def v1_head(in_dim: int, out_dim: int) -> nn.Sequential:
    """MoCo v1: one linear layer (the ResNet's fc with 128 outputs)."""
    return mlp([in_dim, out_dim], batch_norm=False, bias=True)


def v2_head(in_dim: int, out_dim: int, hidden_dim: int | None = None) -> nn.Sequential:
    """MoCo v2: Linear(D, D) → ReLU → Linear(D, 128), with biases and no BN (hidden = backbone width)."""
    return mlp([in_dim, hidden_dim or in_dim, out_dim], batch_norm=False, bias=True)


def v3_projector(in_dim: int, hidden_dim: int, out_dim: int, num_layers: int) -> nn.Sequential:
    """MoCo v3 projector: `num_layers` Linear(bias=False) layers, BN+ReLU between, BN without affine at the end."""
    return mlp([in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim], batch_norm=True, bias=False, last_bn=True)


def v3_predictor(dim: int, hidden_dim: int, num_layers: int, last_bn: bool) -> nn.Sequential:
    """MoCo v3 predictor (query side only): last_bn=False for ResNets, True for ViTs."""
    return mlp([dim] + [hidden_dim] * (num_layers - 1) + [dim], batch_norm=True, bias=False, last_bn=last_bn)
