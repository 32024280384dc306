"""Hand-off of pretrained weights: safetensors files for torchvision, timm, or the whole MoCo model.

    result = export_model(pretrained.model, pretrained.config, "timm", Path("encoder.safetensors"))
    print(result.load_code)   # the exact Python that builds the timm model and loads the file

See docs/export.md for each format's target model.
"""

from __future__ import annotations

import importlib

from mocokit.export.formats import FORMATS

# public name -> the module that defines it, imported when first used: `mocokit export --help` needs only FORMATS,
# and the rest imports torch
_LAZY = {
    "ExportError": "mocokit.export.errors",
    "ExportResult": "mocokit.export.exporter",
    "export_model": "mocokit.export.exporter",
    "read_safetensors": "mocokit.export.files",
    "write_safetensors": "mocokit.export.files",
    "load_moco_safetensors": "mocokit.export.moco_file",
    "Recipe": "mocokit.export.recipes",
    "build_from_recipe": "mocokit.export.recipes",
    "recipe_for": "mocokit.export.recipes",
    "torchvision_resnet": "mocokit.export.torchvision_builder",
}

__all__ = [
    "FORMATS",
    "ExportError",
    "ExportResult",
    "Recipe",
    "build_from_recipe",
    "export_model",
    "load_moco_safetensors",
    "read_safetensors",
    "recipe_for",
    "torchvision_resnet",
    "write_safetensors",
]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'mocokit.export' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
