"""`mocokit import FILE --out RUN_OR_FILE`: the official MoCo checkpoints (and torchvision/timm weights) as a
mocokit checkpoint, for the evaluation commands, `export` and `model.init`."""

from __future__ import annotations

import argparse
from pathlib import Path

from mocokit.commands.common import add_json_flag, print_json


def run(args: argparse.Namespace) -> int:
    if args.list:
        return _list_zoo(args.json)
    if args.file is None or args.out is None:
        from mocokit.errors import ConfigError

        raise ConfigError("mocokit import needs FILE (a weights file or a model zoo name) and --out, or --list")
    from mocokit.export.importer import import_weights

    result = import_weights(args.file, args.out, args.format, args.config, args.overrides, args.force)
    where = result.run_dir if result.run_dir is not None else result.checkpoint
    print(f"read {result.source} ({result.layout} layout, {result.sha256})")
    print(f"model: {result.config_from}")
    print(f"loaded {result.report.describe()}")
    print(f"wrote {result.checkpoint}; evaluate it with `mocokit knn {where} data.path=...`, continue pretraining "
          f"with `mocokit pretrain CONFIG model.init={where}`")
    if args.json:
        print_json({"checkpoint": str(result.checkpoint), "run_dir": str(result.run_dir or ""),
                    "layout": result.layout, "sha256": result.sha256, "tensors": result.report.loaded,
                    "parts": result.report.parts, "notes": result.report.notes,
                    "version": result.config.model.version, "backbone": result.config.model.backbone})
    return 0


def _list_zoo(as_json: bool) -> int:
    """The model zoo: each name with its published linear-probe top-1, whether it is cached, and its address."""
    from mocokit.weights.zoo import ZOO, cache_dir

    rows = [{"name": e.name, "top1": e.top1, "description": e.description, "url": e.url,
             "cached": (cache_dir() / e.filename).is_file(), "md5_prefix": e.md5_prefix, "sha256": e.sha256}
            for e in ZOO.values()]
    print(f"model zoo (ImageNet linear top-1 as published; cache: {cache_dir()}, set $MOCOKIT_CACHE to move it):")
    for row in rows:
        print(f"  {row['name']:<20} {row['top1']:5.1f}  {row['description']:<42} "
              f"{'cached' if row['cached'] else row['url']}")
    print("use a name wherever a weights file goes: mocokit import NAME --out RUN, model.init=NAME")
    if as_json:
        print_json({"cache": str(cache_dir()), "zoo": rows})
    return 0


def register(commands) -> None:
    from mocokit.weights.formats import FORMATS

    parser = commands.add_parser(
        "import", help="import official MoCo (also by model zoo name), mmpretrain, lightly, solo-learn, torchvision or "
                  "timm weights as a mocokit checkpoint",
        description="Read a weights file safely (torch.load(weights_only=True) or safetensors), map its tensors "
                    "onto mocokit's MoCo model strictly (every tensor placed, shapes checked) and write a mocokit "
                    "checkpoint that knn, linear, finetune, transfer, export and model.init read. The optimiser "
                    "state and epoch of the file are not used. See docs/weights.md.",
    )
    parser.add_argument("file", nargs="?", type=Path, help="the weights file (.pth.tar, .pth, .pt, .safetensors) or "
                        "a model zoo name (moco-v2-800ep-r50, ...: downloaded once into a cache; see --list)")
    parser.add_argument("--format", default="auto", choices=FORMATS,
                        help="the file's layout (default auto: recognised from its key names)")
    parser.add_argument("--out", type=Path,
                        help="a run folder to create (RUN/checkpoints/last.pt and RUN/config.yaml) or a .pt file")
    parser.add_argument("--config", default=None, metavar="CONFIG",
                        help="the model the weights must fit (a preset or YAML); default: inferred from the weights")
    parser.add_argument("overrides", nargs="*", default=[], metavar="key=value",
                        help="change the config written with the checkpoint, e.g. data.path=/data/images")
    parser.add_argument("--force", action="store_true", help="overwrite the checkpoint at --out if it exists")
    parser.add_argument("--list", action="store_true",
                        help="list the model zoo (the official MoCo checkpoints by name) and exit")
    add_json_flag(parser)
    parser.set_defaults(handler=run)
