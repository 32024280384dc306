"""A real `torchvision.models.ResNet` shaped like a mocokit ResNet (any width, either stem), without a classifier.

torchvision has no width multiplier, so this builds the named torchvision ResNet and rebuilds its stem and stages
with scaled channels using torchvision's own `_make_layer`. The function only needs torch and torchvision: users
without mocokit can copy it (docs/export.md shows it verbatim).
"""

from __future__ import annotations

import torchvision
from torch import nn


def torchvision_resnet(name: str = "resnet50", width: float = 1.0, cifar_stem: bool = False) -> nn.Module:
    """`torchvision.models.<name>()` (random weights) with stage widths round(64·width)..round(512·width), the CIFAR
    stem (3×3 stride-1 conv1, no max-pool) when asked, and `fc = nn.Identity()`: it maps images N×3×H×W to pooled
    features N×D and accepts a mocokit `--format torchvision` export with `load_state_dict(strict=True)`."""
    model = getattr(torchvision.models, name)()
    block = type(model.layer1[0])
    blocks = [len(model.layer1), len(model.layer2), len(model.layer3), len(model.layer4)]
    planes = [max(1, round(p * width)) for p in (64, 128, 256, 512)]
    model.inplanes = planes[0]  # _make_layer reads and advances it
    if cifar_stem:
        model.conv1 = nn.Conv2d(3, planes[0], kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    else:
        model.conv1 = nn.Conv2d(3, planes[0], kernel_size=7, stride=2, padding=3, bias=False)
    model.bn1 = nn.BatchNorm2d(planes[0])
    model.layer1 = model._make_layer(block, planes[0], blocks[0])
    model.layer2 = model._make_layer(block, planes[1], blocks[1], stride=2)
    model.layer3 = model._make_layer(block, planes[2], blocks[2], stride=2)
    model.layer4 = model._make_layer(block, planes[3], blocks[3], stride=2)
    model.fc = nn.Identity()
    return model
