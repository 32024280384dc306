"""ResNet backbones built from torchvision's residual blocks, with a CIFAR stem and a channel-width multiplier.

Module names follow torchvision's ResNet (conv1, bn1, layer1..4), so with width 1 and the standard stem the state
dict loads into `torchvision.models.resnet50()` (minus its `fc`).
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

RESNET_LAYOUTS: dict[str, tuple[type[nn.Module], list[int], int]] = {
    # name: (block, blocks per stage, width_per_group)
    "resnet18": (BasicBlock, [2, 2, 2, 2], 64),
    "resnet34": (BasicBlock, [3, 4, 6, 3], 64),
    "resnet50": (Bottleneck, [3, 4, 6, 3], 64),
    "resnet101": (Bottleneck, [3, 4, 23, 3], 64),
    "resnet152": (Bottleneck, [3, 8, 36, 3], 64),
    "wide_resnet50_2": (Bottleneck, [3, 4, 6, 3], 128),
    "wide_resnet101_2": (Bottleneck, [3, 4, 23, 3], 128),
}


class ResNet(nn.Module):
    """images N×3×H×W -> globally average-pooled features N×num_features."""

    def __init__(
        self,
        name: str = "resnet50",
        width: float = 1.0,
        cifar_stem: bool = False,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        if name not in RESNET_LAYOUTS:
            raise ValueError(f"unknown ResNet {name!r}; choose one of {', '.join(RESNET_LAYOUTS)}")
        block, layers, width_per_group = RESNET_LAYOUTS[name]
        planes = [max(1, round(p * width)) for p in (64, 128, 256, 512)]
        self._block, self._base_width = block, width_per_group
        self.inplanes = planes[0]
        if cifar_stem:  # 32-96 px images: keep the resolution (He et al. 2016 CIFAR variant, official MoCo CIFAR demo)
            self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=3, stride=1, padding=1, bias=False)
            self.maxpool: nn.Module = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_stage(planes[0], layers[0], stride=1)
        self.layer2 = self._make_stage(planes[1], layers[1], stride=2)
        self.layer3 = self._make_stage(planes[2], layers[2], stride=2)
        self.layer4 = self._make_stage(planes[3], layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.num_features = planes[3] * block.expansion
        self._init_weights(zero_init_residual)

    def _make_stage(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        block = self._block
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        stage = [block(self.inplanes, planes, stride, downsample, base_width=self._base_width)]
        self.inplanes = planes * block.expansion
        stage += [block(self.inplanes, planes, base_width=self._base_width) for _ in range(1, blocks)]
        return nn.Sequential(*stage)

    def _init_weights(self, zero_init_residual: bool) -> None:
        # torchvision's initialisation; zero_init_residual makes each block start as the identity (MoCo v3 ResNet).
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        if zero_init_residual:
            for module in self.modules():
                if isinstance(module, Bottleneck):
                    nn.init.zeros_(module.bn3.weight)
                elif isinstance(module, BasicBlock):
                    nn.init.zeros_(module.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # N×c×H/4×W/4 (N×c×H×W with the CIFAR stem)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)  # N×num_features
