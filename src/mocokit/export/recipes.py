"""Which torchvision or timm model each export format loads into, as a recipe that can be stored, printed and built.

mocokit's ResNet uses torchvision's block classes and module names (conv1, bn1, layer1..4), timm's ResNet uses the
same names and parameter shapes, and mocokit's ViT *is* a timm VisionTransformer; so no tensor is renamed. What
differs between the formats is only how the target model must be built (stem, width, classifier), which a `Recipe`
states exactly.
"""

from __future__ import annotations

import importlib
from dataclasses import asdict, dataclass, field
from typing import Any

from torch import nn

from mocokit.export.errors import ExportError
from mocokit.models.backbones import TIMM_PREFIX, is_vit
from mocokit.models.config import ModelConfig
from mocokit.models.resnet import RESNET_LAYOUTS
from mocokit.models.vit import VIT_SIZES

# Only these builders are called by `build_from_recipe`: a recipe read from a file's metadata never names code.
ALLOWED_BUILDERS = ("torchvision.models.", "timm.create_model", "mocokit.export.torchvision_resnet")


@dataclass(frozen=True)
class Recipe:
    """`builder(*args, **kwargs)`, then the CIFAR stem (conv1 -> 3×3 stride 1, maxpool -> Identity) when
    `cifar_stem`, then `fc -> Identity` when `identity_fc`: the model the exported state dict loads into with
    `load_state_dict(strict=True)`, giving the same features as the mocokit backbone."""

    builder: str  # dotted name of a function, e.g. "timm.create_model"
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    cifar_stem: bool = False
    identity_fc: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Plain values (the `recipe` metadata of an export); `Recipe(**recipe.to_dict()) == recipe`."""
        return asdict(self)

    def python(self) -> str:
        """The recipe as Python lines that build the target model into `model`."""
        module = self.builder.rsplit(".", 1)[0]  # e.g. mocokit.export: `import mocokit` alone would not load it
        call = ", ".join([*map(repr, self.args), *(f"{k}={v!r}" for k, v in self.kwargs.items())])
        lines = [f"import {module}", *(["from torch import nn"] if self.cifar_stem or self.identity_fc else []),
                 f"model = {self.builder}({call})"]
        if self.cifar_stem:
            lines += ["model.conv1 = nn.Conv2d(3, model.conv1.out_channels, kernel_size=3, stride=1, padding=1, "
                      "bias=False)  # CIFAR stem", "model.maxpool = nn.Identity()"]
        if self.identity_fc:
            lines.append("model.fc = nn.Identity()  # features out; add your own classifier")
        return "\n".join(lines)


def recipe_for(cfg: ModelConfig, fmt: str) -> Recipe:
    """The target model of `fmt` ("torchvision" or "timm") for a backbone built from `cfg`; ExportError when that
    library has no such model."""
    if fmt == "torchvision":
        return _torchvision_recipe(cfg)
    if fmt == "timm":
        return _timm_recipe(cfg)
    raise ExportError(f"no recipe for format {fmt!r}; choose torchvision or timm")


def build_from_recipe(recipe: Recipe) -> nn.Module:
    """The model a recipe describes (random weights). Refuses builders outside ALLOWED_BUILDERS."""
    if not recipe.builder.startswith(ALLOWED_BUILDERS):
        raise ExportError(f"recipe builder {recipe.builder!r} is not one of {', '.join(ALLOWED_BUILDERS)}")
    module_name, function_name = recipe.builder.rsplit(".", 1)
    model = getattr(importlib.import_module(module_name), function_name)(*recipe.args, **recipe.kwargs)
    if recipe.cifar_stem:
        model.conv1 = nn.Conv2d(3, model.conv1.out_channels, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    if recipe.identity_fc:
        model.fc = nn.Identity()
    return model


def _torchvision_recipe(cfg: ModelConfig) -> Recipe:
    if cfg.backbone not in RESNET_LAYOUTS:
        raise ExportError(
            f"--format torchvision covers mocokit's ResNets, not {cfg.backbone!r}: use --format timm (ViTs and "
            "timm: backbones are timm models) or --format moco"
        )
    if cfg.width != 1:  # torchvision has no width option: our builder rebuilds a torchvision ResNet's stages
        return Recipe(
            "mocokit.export.torchvision_resnet", [cfg.backbone], {"width": cfg.width, "cifar_stem": cfg.cifar_stem}
        )
    return Recipe(f"torchvision.models.{cfg.backbone}", cifar_stem=cfg.cifar_stem, identity_fc=True)


def _timm_recipe(cfg: ModelConfig) -> Recipe:
    if cfg.backbone in RESNET_LAYOUTS:
        if cfg.width != 1:  # timm's ResNet stem is fixed at 64 channels, so layer1 would not match
            raise ExportError(
                f"timm's ResNet has no width multiplier (model.width={cfg.width}): use --format torchvision (a "
                "torchvision ResNet with scaled channels, see docs/export.md) or --format moco"
            )
        return Recipe("timm.create_model", [cfg.backbone], {"num_classes": 0}, cifar_stem=cfg.cifar_stem)
    if is_vit(cfg.backbone):
        width, depth, heads = VIT_SIZES[cfg.backbone]
        kwargs = dict(img_size=cfg.image_size, patch_size=cfg.patch_size, embed_dim=width, depth=depth,
                      num_heads=heads, mlp_ratio=4.0, qkv_bias=True, class_token=True, global_pool="token",
                      num_classes=0)
        kwargs.update(cfg.backbone_args)  # e.g. depth; the same overrides mocokit's build_vit received
        # The registry name only picks the class: every shape is given explicitly (MoCo v3's ViT-S has 12 heads).
        return Recipe("timm.create_model", [f"{cfg.backbone}_patch16_224"], kwargs)
    if cfg.backbone.startswith(TIMM_PREFIX):  # already a timm model: its state dict as is
        kwargs = {k: v for k, v in cfg.backbone_args.items() if k != "pretrained"}  # the weights come from the file
        return Recipe("timm.create_model", [cfg.backbone[len(TIMM_PREFIX):]], {"num_classes": 0, **kwargs})
    raise ExportError(f"no timm model for backbone {cfg.backbone!r}")
