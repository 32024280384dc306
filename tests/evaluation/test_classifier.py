"""The probe's head, the frozen-backbone classifier and the backbone guard."""

import pytest
import torch
from torch import nn

from mocokit.evaluation.classifier import BackboneChanged, BackboneGuard, FrozenBackboneClassifier, linear_head


def small_backbone() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())


def test_the_new_linear_layer_is_normal_0_01_with_zero_bias():
    head = linear_head(512, 1000, init_std=0.01)
    assert abs(head.weight.std().item() - 0.01) < 5e-4 and abs(head.weight.mean().item()) < 5e-4
    assert torch.count_nonzero(head.bias) == 0
    normed = linear_head(4, 2, feature_norm="batchnorm")
    assert isinstance(normed[0], nn.BatchNorm1d) and not normed[0].affine


def test_the_frozen_backbone_stays_in_eval_mode_and_gets_no_gradient():
    model = FrozenBackboneClassifier(small_backbone(), linear_head(8, 3)).train()
    assert model.head.training and not model.backbone.training
    model(torch.randn(4, 3, 8, 8)).sum().backward()
    assert all(p.grad is None and not p.requires_grad for p in model.backbone.parameters())
    assert all(p.grad is not None for p in model.head.parameters())


def test_the_guard_passes_an_untouched_backbone_and_fires_on_any_changed_tensor():
    backbone = small_backbone()
    guard = BackboneGuard(backbone)
    backbone.eval()(torch.randn(4, 3, 8, 8))  # eval forward: nothing changes
    guard.check(backbone)
    backbone.train()(torch.randn(4, 3, 8, 8))  # train-mode BatchNorm updates its running statistics
    with pytest.raises(BackboneChanged, match=r"1.running_mean"):
        guard.check(backbone)
    fresh = small_backbone()
    guard = BackboneGuard(fresh)
    with torch.no_grad():
        fresh[0].weight[0, 0, 0, 0] += 1e-6  # the smallest change of one weight
    assert guard.changed(fresh) == ["0.weight"]
