"""Export a pretrained MoCo model: its backbone as safetensors for torchvision or timm, as a detectron2 pickle, or
as an ONNX model; or the whole model as safetensors.

Every safetensors file carries metadata (each value JSON text): the mocokit version, the export format, the MoCo
version and backbone, the source checkpoint and step, the run's config, the evaluation preprocessing, and for
torchvision/timm the recipe of the model it loads into with `load_state_dict(strict=True)` (see docs/export.md). An
ONNX file holds the same metadata as its metadata_props; a detectron2 pickle holds what detectron2 reads, no more.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mocokit.config.loader import to_tree
from mocokit.data.recipes import get_recipe
from mocokit.export.detectron2 import check_detectron2, detectron2_config, write_detectron2
from mocokit.export.errors import ExportError
from mocokit.export.files import check_writable, write_safetensors
from mocokit.export.formats import FORMATS
from mocokit.export.onnx_file import onnx_load_code, require_onnx, write_onnx
from mocokit.export.recipes import Recipe, build_from_recipe, recipe_for
from mocokit.export.tensors import check_loadable, standalone_tensors
from mocokit.models import MoCo
from mocokit.training.run_config import Config

FILE_FORMAT = "mocokit-export"  # metadata["format"] of every file written here


@dataclass
class ExportResult:
    path: Path
    format: str  # one of FORMATS
    tensors: int  # number of tensors in the file
    elements: int  # total number of values over all tensors
    bytes: int  # file size
    load_code: str  # Python that builds the target model and loads the file into it (detectron2: its config)
    onnx_difference: float | None = None  # onnx: max |onnxruntime − torch| on random images, checked when written


def export_model(
    model: MoCo, config: Config, fmt: str, out: Path, *, source: str = "", step: int = 0, force: bool = False
) -> ExportResult:
    """Write `model` in format `fmt` to `out`. torchvision/timm: the query encoder's backbone only (the network
    kept after pretraining), checked against the target model before anything is written; moco: every tensor of the
    model (encoder, momentum encoder, predictor, queue and pointer), which `load_moco_safetensors` rebuilds;
    detectron2: the ResNet backbone under detectron2's names, pickled as numpy arrays (official MoCo converter);
    onnx: the backbone as an ONNX model, checked with onnxruntime. Every file appears whole or not at all.
    ExportError for a format the backbone has no target in; FileExistsError when `out` exists and not `force`."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    out = Path(out)
    metadata = _metadata(config, fmt, source, step)
    if fmt in ("detectron2", "onnx"):
        return _export_backbone_file(model, config, fmt, out, metadata, force)
    if fmt == "moco":
        tensors = standalone_tensors(model)
        load_code = ("from mocokit.export import load_moco_safetensors\n"
                     f"model, config = load_moco_safetensors({str(out)!r})")
    else:
        tensors = standalone_tensors(model.backbone)
        recipe = recipe_for(config.model, fmt)
        with torch.device("meta"):  # shapes only: no memory, no initialisation cost
            check_loadable(tensors, build_from_recipe(recipe))
        metadata["recipe"] = recipe.to_dict()
        load_code = _load_code(recipe, out)
    path = write_safetensors(out, tensors, metadata, force)
    return ExportResult(path, fmt, len(tensors), sum(t.numel() for t in tensors.values()), path.stat().st_size,
                        load_code)


def _export_backbone_file(model: MoCo, config: Config, fmt: str, out: Path, metadata: dict[str, Any],
                          force: bool) -> ExportResult:
    """The backbone as a detectron2 pickle or an ONNX model (neither is safetensors)."""
    if fmt == "detectron2":
        check_detectron2(config.model)  # before any work: a ViT or a CIFAR stem is refused in one line
    else:
        require_onnx()
    check_writable(out, force)
    tensors = standalone_tensors(model.backbone)
    difference = None
    if fmt == "detectron2":
        preprocessing = metadata["preprocessing"]
        write_detectron2(out, tensors)
        load_code = detectron2_config(config.model, out, preprocessing["mean"], preprocessing["std"])
    else:
        image_size = config.model.image_size or config.data.image_size
        difference = write_onnx(out, model.backbone, image_size, metadata)
        load_code = onnx_load_code(out, image_size)
    return ExportResult(out, fmt, len(tensors), sum(t.numel() for t in tensors.values()), out.stat().st_size,
                        load_code, difference)


def _metadata(config: Config, fmt: str, source: str, step: int) -> dict[str, Any]:
    from mocokit._version import __version__

    data_recipe = get_recipe(config.data.recipe)
    return {
        "format": FILE_FORMAT,
        "export_format": fmt,
        "mocokit_version": __version__,
        "moco_version": config.model.version,
        "backbone": config.model.backbone,
        "source_checkpoint": source,
        "step": step,
        "config": to_tree(config),
        # the evaluation transform the features were trained for (docs/data.md): centre crop, then normalise
        "preprocessing": {"image_size": config.data.image_size, "mean": list(data_recipe.mean),
                          "std": list(data_recipe.std), "data_recipe": data_recipe.name},
    }


def _load_code(recipe: Recipe, out: Path) -> str:
    return "\n".join([
        recipe.python(),
        "from safetensors.torch import load_file",
        f"model.load_state_dict(load_file({str(out)!r}), strict=True)",
        "model.eval()",
    ])
