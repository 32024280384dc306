"""The backbone as an ONNX model for inference: images N×3×S×S (input `images`) -> features N×D (output
`features`), the batch axis dynamic, exported with `torch.onnx.export` and checked with onnxruntime before the file
appears. Needs the `export` extra (onnx, onnxscript, onnxruntime)."""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mocokit.export.errors import ExportError
from mocokit.files import atomic_output

PACKAGES = ("onnx", "onnxscript", "onnxruntime")  # the `export` extra
TOLERANCE = 1e-4  # max |onnxruntime − torch| allowed on random images, relative to the features' largest value


def require_onnx() -> None:
    """ExportError (one line, with the pip command) when a package of the `export` extra is missing."""
    missing = [name for name in PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise ExportError(f"--format onnx needs {', '.join(missing)}: pip install 'mocokit[export]'")


@torch.no_grad()
def write_onnx(path: Path, backbone: nn.Module, image_size: int, metadata: dict[str, Any]) -> float:
    """Export `backbone` (a copy, in eval mode, on the CPU) to `path`, one self-contained file, with `metadata` as
    the model's metadata_props (values as JSON text); returns the largest |onnxruntime − torch| difference over a
    random batch of 3 (another size than the traced batch of 2, so the dynamic axis is exercised). ExportError when
    the difference exceeds TOLERANCE × the features' largest magnitude; the file then never appears."""
    require_onnx()
    import onnx
    import onnxruntime

    backbone = copy.deepcopy(backbone).cpu().eval()
    example = torch.randn(2, 3, image_size, image_size)
    batch = torch.export.Dim("batch", min=1)
    with atomic_output(path) as partial:
        torch.onnx.export(backbone, (example,), str(partial), dynamo=True, input_names=["images"],
                          output_names=["features"], dynamic_shapes=({0: batch},), external_data=False,
                          verbose=False)
        model = onnx.load(str(partial))
        onnx.helper.set_model_props(model, {key: json.dumps(value) for key, value in metadata.items()})
        onnx.save(model, str(partial))
        session = onnxruntime.InferenceSession(str(partial), providers=["CPUExecutionProvider"])
        images = torch.randn(3, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
        expected = backbone(images)
        got = torch.from_numpy(session.run(["features"], {"images": images.numpy()})[0])
        difference = float((got - expected).abs().max())
        if not difference <= TOLERANCE * max(1.0, float(expected.abs().max())):
            raise ExportError(f"onnxruntime's features differ from torch's by up to {difference:.2g} on random "
                              "images; the ONNX file was not written (please report this with the run's "
                              "config.yaml)")
    return difference


def onnx_load_code(path: Path, image_size: int) -> str:
    """Python that runs the file with onnxruntime."""
    return "\n".join([
        "import numpy as np",
        "import onnxruntime",
        f"session = onnxruntime.InferenceSession({str(path)!r})",
        f"images = np.zeros((1, 3, {image_size}, {image_size}), np.float32)  # normalised as in preprocessing",
        'features = session.run(["features"], {"images": images})[0]  # N×D',
    ])
