"""Backbones behind one contract: an nn.Module mapping images N×3×H×W to features N×D, with `num_features` = D.

Nothing is found or replaced by attribute name: every backbone is built without a classifier. Each family is an
entry of `FAMILIES` with the traits the rest of mocokit asks about (is it a ViT; does it normalise with batch
statistics), so no other module tests backbone names:
- torchvision-style ResNets (`resnet18` ... `wide_resnet101_2`), with a CIFAR stem and a width multiplier;
- MoCo v3 ViTs (`vit_tiny`, `vit_small`, `vit_base`, `vit_large`) on timm;
- any timm model as `timm:<name>` (built with num_classes=0, timm's own pooled-features contract).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from mocokit.errors import ConfigError
from mocokit.models.config import TIMM_PREFIX, ModelConfig
from mocokit.models.resnet import RESNET_LAYOUTS, ResNet

VIT_NAMES = ("vit_tiny", "vit_small", "vit_base", "vit_large")  # sizes in models/vit.py (VIT_SIZES)


@dataclass(frozen=True)
class BackboneFamily:
    name: str
    matches: Callable[[str], bool]  # model.backbone -> whether it is of this family
    build: Callable[[ModelConfig], nn.Module]
    is_vit: bool  # MoCo v3's ViT: 3-layer projector, BN at the predictor's end, patch-projection freeze, ViT protocols
    batch_statistics: bool | None  # BatchNorm layers (None: depends on the model; see has_batch_statistics)
    names: tuple[str, ...] = ()  # the names it offers, for messages


def _build_resnet(cfg: ModelConfig) -> nn.Module:
    if cfg.backbone_args:
        raise ConfigError(f"model.backbone_args is for timm and ViT backbones, not {cfg.backbone}")
    return ResNet(cfg.backbone, width=cfg.width, cifar_stem=cfg.cifar_stem, zero_init_residual=cfg.zero_init_residual)


def _build_vit(cfg: ModelConfig) -> nn.Module:
    from mocokit.models.vit import build_vit

    if cfg.image_size is None:
        raise ConfigError("model.image_size is null: a run's config sets it to data.image_size; give it when "
                          "building a ViT from a ModelConfig alone")
    return build_vit(cfg.backbone, image_size=cfg.image_size, patch_size=cfg.patch_size,
                     freeze_patch_embed=cfg.freeze_patch_embed, **cfg.backbone_args)


def _build_timm(cfg: ModelConfig) -> nn.Module:
    import timm

    name = cfg.backbone[len(TIMM_PREFIX):]
    if not timm.is_model(name):
        raise ValueError(
            f"timm has no model {name!r} (model.backbone=timm:{name}); `python -c \"import timm; "
            f"print(timm.list_models('*{name[:6]}*'))\"` lists similar names"
        )
    # num_classes=0: timm's forward then returns pooled features N×num_features. Weights are random unless the user
    # asks timm for pretrained ones through model.backbone_args (pretrained: true), which downloads them.
    return timm.create_model(name, num_classes=0, **cfg.backbone_args)


FAMILIES: tuple[BackboneFamily, ...] = (
    BackboneFamily("resnet", RESNET_LAYOUTS.__contains__, _build_resnet, is_vit=False, batch_statistics=True,
                   names=tuple(RESNET_LAYOUTS)),
    BackboneFamily("vit", VIT_NAMES.__contains__, _build_vit, is_vit=True, batch_statistics=False, names=VIT_NAMES),
    BackboneFamily("timm", lambda name: name.startswith(TIMM_PREFIX), _build_timm, is_vit=False,
                   batch_statistics=None, names=(f"{TIMM_PREFIX}<any timm model name>",)),
)


def backbone_names() -> list[str]:
    return [name for family in FAMILIES for name in family.names]


def backbone_family(name: str) -> BackboneFamily:
    """The family of model.backbone `name`; ValueError naming the choices when there is none."""
    for family in FAMILIES:
        if family.matches(name):
            return family
    raise ValueError(f"unknown model.backbone {name!r}; choose one of {', '.join(backbone_names())}")


def is_vit(name: str) -> bool:
    return backbone_family(name).is_vit


def build_backbone(cfg: ModelConfig) -> nn.Module:
    family = backbone_family(cfg.backbone)
    try:  # backbone_args are keyword arguments of timm's constructors: only building checks them
        return family.build(cfg)
    except (TypeError, ValueError) as error:
        if family.name == "resnet":
            raise
        raise ConfigError(f"model.backbone={cfg.backbone} cannot be built with model.backbone_args="
                          f"{cfg.backbone_args} ({type(error).__name__}: {error})") from None


def has_batch_statistics(module: nn.Module) -> bool:
    """Whether some layer of `module` normalises with statistics of the batch in training (any BatchNorm)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())
