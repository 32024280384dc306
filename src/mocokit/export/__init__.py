"""Hand-off of pretrained weights: safetensors files for torchvision, timm, or the whole MoCo model.

    result = export_model(pretrained.model, pretrained.config, "timm", Path("encoder.safetensors"))
    print(result.load_code)   # the exact Python that builds the timm model and loads the file

See docs/export.md for each format's target model.
"""

from mocokit.export.errors import ExportError
from mocokit.export.exporter import FORMATS, ExportResult, export_model
from mocokit.export.files import read_safetensors, write_safetensors
from mocokit.export.moco_file import load_moco_safetensors
from mocokit.export.recipes import Recipe, build_from_recipe, recipe_for
from mocokit.export.torchvision_builder import torchvision_resnet

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
