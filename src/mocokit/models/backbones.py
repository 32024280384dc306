"""Backbones behind one contract: an nn.Module mapping images N×3×H×W to features N×D, with `num_features` = D.

Nothing is found or replaced by attribute name: every backbone is built without a classifier.
- torchvision-style ResNets (`resnet18` ... `wide_resnet101_2`), with a CIFAR stem and a width multiplier;
- MoCo v3 ViTs (`vit_tiny`, `vit_small`, `vit_base`, `vit_large`) on timm;
- any timm model as `timm:<name>` (built with num_classes=0, timm's own pooled-features contract).
"""

from __future__ import annotations

from torch import nn

from mocokit.config.loader import ConfigError
from mocokit.models.config import ModelConfig
from mocokit.models.resnet import RESNET_LAYOUTS, ResNet
from mocokit.models.vit import VIT_SIZES, build_vit

TIMM_PREFIX = "timm:"


def backbone_names() -> list[str]:
    return [*RESNET_LAYOUTS, *VIT_SIZES, f"{TIMM_PREFIX}<any timm model name>"]


def is_vit(name: str) -> bool:
    return name in VIT_SIZES


def build_backbone(cfg: ModelConfig) -> nn.Module:
    name = cfg.backbone
    if name in RESNET_LAYOUTS:
        if cfg.backbone_args:
            raise ConfigError(f"model.backbone_args is for timm and ViT backbones, not {name}")
        return ResNet(name, width=cfg.width, cifar_stem=cfg.cifar_stem, zero_init_residual=cfg.zero_init_residual)
    try:  # backbone_args are keyword arguments of timm's constructors: only building checks them
        if name in VIT_SIZES:
            return build_vit(
                name,
                image_size=cfg.image_size,
                patch_size=cfg.patch_size,
                freeze_patch_embed=cfg.freeze_patch_embed,
                **cfg.backbone_args,
            )
        if name.startswith(TIMM_PREFIX):
            return _timm_backbone(name[len(TIMM_PREFIX) :], cfg.backbone_args)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"model.backbone={name} cannot be built with model.backbone_args={cfg.backbone_args} "
                          f"({type(error).__name__}: {error})") from None
    raise ValueError(f"unknown model.backbone {name!r}; choose one of {', '.join(backbone_names())}")


def _timm_backbone(name: str, kwargs: dict) -> nn.Module:
    import timm

    if not timm.is_model(name):
        raise ValueError(
            f"timm has no model {name!r} (model.backbone=timm:{name}); `python -c \"import timm; "
            f"print(timm.list_models('*{name[:6]}*'))\"` lists similar names"
        )
    # num_classes=0: timm's forward then returns pooled features N×num_features. Weights are random unless the user
    # asks timm for pretrained ones through model.backbone_args (pretrained: true), which downloads them.
    return timm.create_model(name, num_classes=0, **kwargs)
