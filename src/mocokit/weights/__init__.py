"""Weights from elsewhere: the checkpoints of the official MoCo code and of torchvision/timm, read safely and mapped
strictly onto mocokit's MoCo model (docs/weights.md).

    weights = read_weights("moco_v2_800ep_pretrain.pth.tar")   # ForeignWeights: tensors under mocokit's names
    report = load_weights(model, weights)                       # every tensor placed, shapes checked

`mocokit import` writes them as a mocokit checkpoint; `model.init=FILE` starts a pretraining run from them. FILE may
also be a model zoo name (`moco-v2-800ep-r50`: the official file, downloaded once into a cache and checked).
"""

from __future__ import annotations

import importlib

from mocokit.weights.formats import FORMATS, LAYOUTS

# public name -> the module that defines it, imported when first used: `mocokit import --help` needs only FORMATS
_LAZY = {
    "WeightsError": "mocokit.weights.errors",
    "ForeignWeights": "mocokit.weights.layouts",
    "map_layout": "mocokit.weights.layouts",
    "read_weights": "mocokit.weights.read",
    "file_sha256": "mocokit.weights.read",
    "infer_model_settings": "mocokit.weights.infer",
    "LoadReport": "mocokit.weights.load",
    "load_weights": "mocokit.weights.load",
    "ZOO": "mocokit.weights.zoo",
    "zoo_file": "mocokit.weights.zoo",
}

__all__ = ["FORMATS", "LAYOUTS", *_LAZY]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'mocokit.weights' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
