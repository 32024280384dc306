"""The `model:` section of a mocokit config: which MoCo, which backbone, which heads and loss settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Version = Literal["v1", "v2", "v3"]


@dataclass
class ModelConfig:
    version: Version = "v2"  # v1: linear head; v2: MLP head; v3: projector + predictor, batch negatives
    # resnet18/34/50/101/152, wide_resnet50_2, vit_tiny/vit_small/vit_base/vit_large, or `timm:<name>` (any timm model)
    backbone: str = "resnet50"
    backbone_args: dict[str, Any] = field(default_factory=dict)  # extra keyword arguments for timm backbones
    cifar_stem: bool = False  # ResNet: 3x3 stride-1 first conv and no max-pool, for 32-96 px images
    width: float = 1.0  # ResNet channel multiplier (0.25 -> 16-32-64-128 channels for ResNet-18)
    image_size: int = 224  # ViT: input side in pixels (sets the patch grid and the position embedding)
    patch_size: int = 16  # ViT: patch side in pixels (4 for 32 px images)
    freeze_patch_embed: bool = False  # v3 ViT stability trick: keep the random patch projection frozen
    zero_init_residual: bool = False  # ResNet: zero-init the last BN gamma of each residual block (v3)

    dim: int = 128  # output feature dimension C of the head (v1/v2: 128, v3: 256)
    hidden_dim: int | None = None  # MLP hidden width; None: v2 uses the backbone's width, v3 uses 4096
    projector_layers: int | None = None  # v3: None -> 2 for ResNets, 3 for ViTs (v1: 1 linear layer, v2: 2)
    predictor_layers: int = 2  # v3 predictor (query side only)

    temperature: float = 0.2  # T in the softmax (v1 0.07, v2 0.2, v3 ResNet 1.0, v3 ViT 0.2)
    momentum: float = 0.999  # key-encoder EMA m (v3: the starting value m0 of the cosine schedule)
    momentum_schedule: Literal["constant", "cosine"] = "constant"  # v3: "cosine", rising from m0 to 1
    queue_size: int = 65536  # K, number of negative keys in the queue (v1/v2 only)
    symmetric: bool = False  # v1/v2: also swap the views and add the second loss term (as the CIFAR demo)
    shuffle_bn: bool = True  # v1/v2: shuffle BN against the batch-statistics shortcut
    # BatchNorm groups over the global batch (each group has its own batch statistics). On one device this is what
    # makes shuffle BN work: keys are shuffled across groups. With P processes each process uses bn_splits/P groups.
    bn_splits: int = 1

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise ValueError(f"model.temperature must be > 0, got {self.temperature}")
        if not 0.0 <= self.momentum <= 1.0:
            raise ValueError(f"model.momentum must be in [0, 1], got {self.momentum}")
        for name in ("dim", "predictor_layers", "bn_splits", "image_size", "patch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"model.{name} must be >= 1, got {getattr(self, name)}")
        if self.width <= 0:
            raise ValueError(f"model.width must be > 0, got {self.width}")
        if self.hidden_dim is not None and self.hidden_dim < 1:
            raise ValueError(f"model.hidden_dim must be >= 1 or null, got {self.hidden_dim}")
        if self.projector_layers is not None and self.projector_layers < 1:
            raise ValueError(f"model.projector_layers must be >= 1 or null, got {self.projector_layers}")
        if self.uses_queue and self.queue_size < 1:
            raise ValueError(f"model.queue_size must be >= 1 for MoCo {self.version}, got {self.queue_size}")
        if self.backbone.startswith("vit") and self.image_size % self.patch_size:
            raise ValueError(
                f"model.image_size ({self.image_size}) must be a multiple of model.patch_size ({self.patch_size})"
            )

    @property
    def uses_queue(self) -> bool:
        """v1/v2 take negatives from the queue; v3 from the other images of the batch."""
        return self.version in ("v1", "v2")
