"""`mocokit export RUN --format torchvision|timm|moco|detectron2|onnx --out FILE`: weights for other libraries."""

from __future__ import annotations

import argparse
from pathlib import Path

from mocokit.commands.common import add_json_flag, print_json


def run(args: argparse.Namespace) -> int:
    from mocokit.evaluation.pretrained import load_pretrained
    from mocokit.export import export_model
    from mocokit.export.files import check_writable

    check_writable(args.out, args.force)
    pretrained = load_pretrained(args.run)
    result = export_model(pretrained.model, pretrained.config, args.format, args.out,
                          source=str(pretrained.checkpoint), step=pretrained.step, force=args.force)
    checked = "" if result.onnx_difference is None else (
        f"; onnxruntime's features within {result.onnx_difference:.1g} of torch's")
    how = "Use it in detectron2 with" if result.format == "detectron2" else "Load it with"
    print(f"wrote {result.path} ({result.format}: {result.tensors} tensors, {result.bytes / 1e6:.1f} MB, step "
          f"{pretrained.step}{checked}). {how}:\n{result.load_code}")
    if args.json:
        print_json({
            "out": str(result.path), "format": result.format, "tensors": result.tensors,
            "elements": result.elements, "bytes": result.bytes, "step": pretrained.step,
            "source_checkpoint": str(pretrained.checkpoint), "backbone": pretrained.config.model.backbone,
            "load_code": result.load_code, "onnx_difference": result.onnx_difference,
        })
    return 0


def register(commands) -> None:
    from mocokit.export.formats import FORMATS

    parser = commands.add_parser(
        "export", help="export pretrained weights for torchvision, timm, detectron2, ONNX or mocokit",
        description="Write the backbone of a run under the names of the matching torchvision or timm model "
                    "(load_state_dict(strict=True) works; the printed code builds that model), or the whole MoCo "
                    "model (--format moco); a ResNet backbone for detectron2 as the official MoCo converter writes it "
                    "(--format detectron2, a .pkl); the backbone as an ONNX model checked with onnxruntime (--format "
                    "onnx, needs pip install 'mocokit[export]'). See docs/export.md.",
    )
    parser.add_argument("run", help="a run folder (its newest intact checkpoint: checkpoints/last.pt, else "
                        "previous.pt, as resume=auto) or a checkpoint file")
    parser.add_argument("--format", required=True, choices=FORMATS, help="target library (moco: the whole model)")
    parser.add_argument("--out", required=True, type=Path,
                        help="the file to write: .safetensors (torchvision, timm, moco), .pkl (detectron2), .onnx")
    parser.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    add_json_flag(parser)
    parser.set_defaults(handler=run)
