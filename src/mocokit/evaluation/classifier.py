"""Classifiers on a backbone: the new linear layer of the official probe, the frozen-backbone classifier, and the
guard that checks a probe left every backbone tensor unchanged (the official sanity check)."""

from __future__ import annotations

import torch
from torch import nn


def linear_head(in_features: int, num_classes: int, init_std: float = 0.01,
                feature_norm: str = "none") -> nn.Module:
    """features N×D -> logits N×classes: a Linear with weights N(0, init_std²) and bias 0 (the official probe).
    feature_norm="batchnorm" puts a BatchNorm1d without affine parameters first, which standardises the features
    so that a large lr (30) cannot blow the logits up (MAE's probe; moco #90)."""
    linear = nn.Linear(in_features, num_classes)
    nn.init.normal_(linear.weight, std=init_std)
    nn.init.zeros_(linear.bias)
    if feature_norm == "none":
        return linear
    if feature_norm == "batchnorm":
        return nn.Sequential(nn.BatchNorm1d(in_features, affine=False, eps=1e-6), linear)
    raise ValueError(f"feature_norm must be none or batchnorm, got {feature_norm!r}")


class FrozenBackboneClassifier(nn.Module):
    """head(backbone(images)) where the backbone never trains: it stays in eval mode (BatchNorm uses its stored
    statistics, whatever `.train()` is called on this module), runs without autograd, and its parameters have
    requires_grad=False so no optimiser can be handed them."""

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone.eval().requires_grad_(False)
        self.head = head

    def train(self, mode: bool = True) -> FrozenBackboneClassifier:
        super().train(mode)
        self.backbone.eval()
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            features = self.backbone(images)  # N×D
        return self.head(features)  # N×classes


class BackboneChanged(RuntimeError):
    """A frozen backbone's tensors differ from the loaded ones after training: the probe is invalid."""


class BackboneGuard:
    """Snapshot of every tensor of a backbone (parameters and buffers, BatchNorm statistics included), checked after
    training: the official linear-probe sanity check, kept as a guard."""

    def __init__(self, backbone: nn.Module) -> None:
        self.reference = {name: t.detach().to("cpu", copy=True) for name, t in backbone.state_dict().items()}

    def changed(self, backbone: nn.Module) -> list[str]:
        """Names of the tensors that differ from the snapshot (or appeared or disappeared)."""
        current = backbone.state_dict()
        names = sorted(set(current) | set(self.reference))
        return [name for name in names if name not in current or name not in self.reference
                or not torch.equal(current[name].detach().cpu(), self.reference[name])]

    def check(self, backbone: nn.Module) -> None:
        """Raise BackboneChanged naming the tensors that changed; return when every one is equal."""
        changed = self.changed(backbone)
        if changed:
            shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
            raise BackboneChanged(
                f"the frozen backbone changed during the linear probe ({len(changed)} tensors: {shown}); the probe "
                "is not a valid evaluation of the pretrained weights. This is a bug: please report it."
            )
