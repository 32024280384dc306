"""A ResNet backbone for detectron2, in the layout of the official MoCo converter
(facebookresearch/moco, detection/convert-pretrain-to-detectron2.py).

detectron2's ResNet holds the same tensors as torchvision's under other names. The official rules, applied to each
key of the query encoder:

- a key outside the stages belongs to the stem: `conv1.weight` -> `stem.conv1.weight`, `bn1.*` -> `stem.conv1.norm.*`;
- stage `layerN` -> `res{N+1}` (res2..res5);
- a block's `bnT` -> `convT.norm` (T = 1, 2, 3);
- the projection shortcut `downsample.0` -> `shortcut`, `downsample.1` -> `shortcut.norm`.

Values are numpy arrays; the pickle is `{"model": {name: array}, "__author__": ..., "matching_heuristics": True}`
(detectron2's checkpointer then matches names by suffix, and the C4/FPN heads it adds start random). The official
output also carries the MoCo head as `stem.fc.*`, which detectron2 ignores; this one holds the backbone alone.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import torch

from mocokit.export.errors import ExportError
from mocokit.files import atomic_output
from mocokit.models.config import ModelConfig
from mocokit.models.resnet import RESNET_LAYOUTS

AUTHOR = "mocokit"  # detectron2 only logs it ("Reading a file from 'mocokit'"); the official converter writes "MOCO"
_DEPTHS = {"resnet18": 18, "resnet34": 34, "resnet50": 50, "resnet101": 101, "resnet152": 152,
           "wide_resnet50_2": 50, "wide_resnet101_2": 101}


def detectron2_name(name: str) -> str:
    """A torchvision ResNet key under detectron2's name (the rules above)."""
    if not name.startswith("layer"):
        name = "stem." + name
    name = re.sub(r"^layer([1-4])\.", lambda m: f"res{int(m.group(1)) + 1}.", name)
    name = re.sub(r"(^|\.)bn([1-3])\.", r"\1conv\2.norm.", name)
    return name.replace(".downsample.0.", ".shortcut.").replace(".downsample.1.", ".shortcut.norm.")


def check_detectron2(cfg: ModelConfig) -> None:
    """ExportError (one line: why, and what to use instead) unless detectron2's ResNet can hold this backbone: a
    mocokit ResNet at width 1 with the standard ImageNet stem."""
    if cfg.backbone not in RESNET_LAYOUTS:
        raise ExportError(f"--format detectron2 covers ResNets (detectron2's backbones for MoCo transfer), not "
                          f"{cfg.backbone!r}: use --format onnx or timm (or torchvision for ResNets)")
    if cfg.cifar_stem:
        raise ExportError("--format detectron2 needs the standard ImageNet stem (7×7 stride-2 conv and max-pool): "
                          "this run has the CIFAR stem (model.cifar_stem=true), which detectron2's BasicStem cannot "
                          "hold; use --format torchvision or onnx")
    if cfg.width != 1:
        raise ExportError(f"--format detectron2 exports ResNets at width 1, not model.width={cfg.width} "
                          "(detectron2's stage widths are set per stage in its config); use --format torchvision")


def detectron2_state(tensors: dict[str, torch.Tensor]) -> dict[str, object]:
    """The pickle's content for a backbone state dict (torchvision names)."""
    return {"model": {detectron2_name(name): t.numpy() for name, t in tensors.items()}, "__author__": AUTHOR,
            "matching_heuristics": True}


def write_detectron2(path: Path, tensors: dict[str, torch.Tensor]) -> Path:
    """Pickle the backbone `tensors` (CPU, torchvision names) in detectron2's layout; the file appears whole."""
    with atomic_output(path) as partial, open(partial, "wb") as handle:
        pickle.dump(detectron2_state(tensors), handle)
    return path


def detectron2_config(cfg: ModelConfig, path: Path, mean: tuple[float, ...], std: tuple[float, ...]) -> str:
    """The detectron2 config lines that build a ResNet this file loads into (as the official MoCo detection configs,
    configs/*_moco.yaml: torchvision's blocks stride in the 3×3 conv, RGB input normalised as in pretraining)."""
    lines = ["# detectron2 config (as facebookresearch/moco detection/configs/*_moco.yaml)",
             f"MODEL.WEIGHTS: {str(path)!r}",
             f"MODEL.RESNETS.DEPTH: {_DEPTHS[cfg.backbone]}",
             "MODEL.RESNETS.STRIDE_IN_1X1: False",
             f"MODEL.PIXEL_MEAN: {[round(255 * m, 3) for m in mean]}",
             f"MODEL.PIXEL_STD: {[round(255 * s, 3) for s in std]}",
             'INPUT.FORMAT: "RGB"']
    block, _layers, group_width = RESNET_LAYOUTS[cfg.backbone]
    if block.__name__ == "BasicBlock":
        lines.append("MODEL.RESNETS.RES2_OUT_CHANNELS: 64")
    if group_width != 64:
        lines.append(f"MODEL.RESNETS.WIDTH_PER_GROUP: {group_width}")
    return "\n".join(lines)
