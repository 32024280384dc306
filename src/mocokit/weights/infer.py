"""The mocokit model a file's tensors describe: backbone from the shapes (or the file's `arch`), MoCo version and
head sizes from the heads, queue size from the queue. Heads and blocks count are read from the weights; what
weights cannot tell (a ViT's number of attention heads, the temperature) comes from the preset of that version.
"""

from __future__ import annotations

import re

import torch

from mocokit.models.resnet import RESNET_LAYOUTS
from mocokit.models.vit import VIT_SIZES
from mocokit.weights.errors import WeightsError
from mocokit.weights.layouts import ForeignWeights

# (version, is a ViT) -> the preset whose other settings (temperature, momentum, optimiser, data) an import takes
PRESETS = {("v1", False): "v1-imagenet", ("v2", False): "v2-imagenet", ("v3", False): "v3-resnet50-imagenet",
           ("v3", True): "v3-vit-small-imagenet", ("v2", True): "v3-vit-small-imagenet"}


def infer_model_settings(weights: ForeignWeights) -> tuple[str, list[str]]:
    """(preset name, `model.*=value` overrides) of the model these weights fit, and for a ViT `data.image_size`: the
    side its position embedding was made for, the only side it takes. A file with no heads (torchvision, timm) gives
    MoCo v2 for a ResNet and v3 for a ViT, with heads of the preset's sizes (random). WeightsError when the backbone
    is of no known shape (then pass --config)."""
    backbone = {name[len("encoder.backbone."):]: t for name, t in weights.tensors.items()
                if name.startswith("encoder.backbone.")}
    if "cls_token" in backbone:
        vit = True
        overrides = _vit(backbone, weights)
    elif "conv1.weight" in backbone:
        vit = False
        overrides = _resnet(backbone, weights)
    else:
        raise WeightsError(f"{weights.path}: no ResNet or ViT backbone recognised in its encoder; pass --config "
                           "with the model it was trained as")
    version, head = _heads(weights, vit)
    overrides = [f"model.version={version}", *overrides, *head]
    queue = weights.tensors.get("queue.keys")
    if queue is not None:
        overrides.append(f"model.queue_size={queue.shape[0]}")
    return PRESETS[(version, vit)], overrides


def _count(names, pattern: str) -> int:
    found = [int(m.group(1)) for m in (re.match(pattern, n) for n in names) if m]
    return max(found) + 1 if found else 0


def _resnet(backbone: dict[str, torch.Tensor], weights: ForeignWeights) -> list[str]:
    stem = backbone["conv1.weight"]  # c0×3×k×k
    channels = stem.shape[0]
    width = channels / 64
    bottleneck = "layer1.0.conv3.weight" in backbone
    blocks = [_count(backbone, rf"layer{stage}\.(\d+)\.") for stage in (1, 2, 3, 4)]
    inner = backbone["layer1.0.conv1.weight"].shape[0]  # bottleneck: planes·base_width/64
    base_width = round(64 * inner / channels) if bottleneck else 64
    names = [name for name, (block, layers, group_width) in RESNET_LAYOUTS.items()
             if (block.__name__ == "Bottleneck") == bottleneck and layers == blocks and group_width == base_width]
    if weights.arch in names:  # the official files name it (resnet50)
        names = [weights.arch]
    if not names:
        raise WeightsError(f"{weights.path}: a ResNet with {blocks} blocks per stage "
                           f"({'bottleneck' if bottleneck else 'basic'} blocks) is none of "
                           f"{', '.join(RESNET_LAYOUTS)}")
    cifar_stem = stem.shape[-1] == 3  # 3×3 stride-1 first conv, no max-pool (the CIFAR recipes)
    return [f"model.backbone={names[0]}", f"model.width={width:g}", f"model.cifar_stem={str(cifar_stem).lower()}"]


def _vit(backbone: dict[str, torch.Tensor], weights: ForeignWeights) -> list[str]:
    embed = backbone["cls_token"].shape[-1]
    sizes = [name for name, (width, _depth, _heads) in VIT_SIZES.items() if width == embed]
    if not sizes:
        raise WeightsError(f"{weights.path}: a ViT of width {embed} is none of mocokit's "
                           f"({', '.join(f'{n}: {w}' for n, (w, _, _) in VIT_SIZES.items())})")
    depth = _count(backbone, r"blocks\.(\d+)\.")
    patch = backbone["patch_embed.proj.weight"].shape[-1]
    grid = round((backbone["pos_embed"].shape[1] - 1) ** 0.5)
    side = grid * patch  # the evaluation commands bring images to data.image_size: the ViT's own side
    overrides = [f"model.backbone={sizes[0]}", f"model.patch_size={patch}", f"model.image_size={side}",
                 f"data.image_size={side}"]
    if depth != VIT_SIZES[sizes[0]][1]:
        overrides.append(f"model.backbone_args={{depth: {depth}}}")
    # the number of attention heads is not in the weights: MoCo v3's (ViT-S: 12); another one via --config
    return overrides


def _linears(weights: ForeignWeights, prefix: str) -> list[torch.Tensor]:
    """The weight matrices of an MLP's Linear layers, in order."""
    layers = sorted((int(m.group(1)), t) for name, t in weights.tensors.items()
                    if (m := re.fullmatch(re.escape(prefix) + r"(\d+)\.weight", name)) and t.ndim == 2)
    return [t for _, t in layers]


def _heads(weights: ForeignWeights, vit: bool) -> tuple[str, list[str]]:
    """(version, head overrides) from the query encoder's head and the predictor."""
    linears = _linears(weights, "encoder.head.")
    if not linears:
        return ("v3" if vit else "v2"), []
    batch_norm = any(name.startswith("encoder.head.") and name.endswith("running_mean") for name in weights.tensors)
    dim, hidden = linears[-1].shape[0], linears[0].shape[0]
    if not batch_norm:
        if len(linears) == 1:
            return "v1", [f"model.dim={dim}"]
        if len(linears) == 2:
            return "v2", [f"model.dim={dim}", f"model.hidden_dim={hidden}"]
        raise WeightsError(f"{weights.path}: a head of {len(linears)} Linear layers without BatchNorm is neither "
                           "MoCo v1's (1) nor v2's (2); pass --config")
    predictor = _linears(weights, "predictor.")
    overrides = [f"model.dim={dim}", f"model.hidden_dim={hidden}", f"model.projector_layers={len(linears)}"]
    if predictor:
        overrides.append(f"model.predictor_layers={len(predictor)}")
    return "v3", overrides
