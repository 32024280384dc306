"""`mocokit export RUN --format torchvision|timm|moco --out FILE.safetensors`: weights for other libraries."""

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
    print(f"wrote {result.path} ({result.format}: {result.tensors} tensors, {result.bytes / 1e6:.1f} MB, step "
          f"{pretrained.step}). Load it with:\n{result.load_code}")
    if args.json:
        print_json({
            "out": str(result.path), "format": result.format, "tensors": result.tensors,
            "elements": result.elements, "bytes": result.bytes, "step": pretrained.step,
            "source_checkpoint": str(pretrained.checkpoint), "backbone": pretrained.config.model.backbone,
            "load_code": result.load_code,
        })
    return 0


def register(commands) -> None:
    from mocokit.export.formats import FORMATS

    parser = commands.add_parser(
        "export", help="export pretrained weights as safetensors for torchvision, timm or mocokit",
        description="Write the backbone of a run under the names of the matching torchvision or timm model "
                    "(load_state_dict(strict=True) works; the printed code builds that model), or the whole MoCo "
                    "model (--format moco). See docs/export.md.",
    )
    parser.add_argument("run", help="a run folder (its newest intact checkpoint: checkpoints/last.pt, else "
                        "previous.pt, as resume=auto) or a checkpoint file")
    parser.add_argument("--format", required=True, choices=FORMATS, help="target library (moco: the whole model)")
    parser.add_argument("--out", required=True, type=Path, help="the .safetensors file to write")
    parser.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    add_json_flag(parser)
    parser.set_defaults(handler=run)
