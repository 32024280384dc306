"""The `mocokit` command. Each subcommand parses its arguments and calls the library; the work lives elsewhere.

    mocokit pretrain CONFIG [key=value ...]   pretrain (CONFIG: a preset name or a YAML file)
    mocokit presets                           list the presets
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from mocokit import __version__

EXIT_USER_ERROR = 2  # a bad config, bad data or an unusable checkpoint: the message says what to do
EXIT_TRAINING_FAILED = 1


def _add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="a preset name (see `mocokit presets`) or a YAML file")
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value",
        help="change any config field, e.g. train.epochs=5 data.path=/data/images optim.lr=0.1 resume=none",
    )


def cmd_presets(args: argparse.Namespace) -> int:
    from mocokit.config import preset_description, preset_names

    names = preset_names()
    width = max(map(len, names))
    for name in names:
        print(f"{name:<{width}}  {preset_description(name)}")
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    from mocokit.config import load_config
    from mocokit.engine.pretrain import pretrain

    cfg = load_config(args.config, args.overrides)
    result = pretrain(cfg)
    summary = {
        "run_dir": str(result.run_dir), "completed": result.completed, "epochs": result.epochs_done,
        "steps": result.steps_done, "minutes": round(result.minutes, 2),
        "knn_top1": result.knn_top1, "knn_top5": result.knn_top5,
        "random_init_knn_top1": result.baseline_top1, "random_init_knn_top5": result.baseline_top5,
    }
    if result.knn_top1 is not None and result.baseline_top1 is not None:
        print(f"kNN top-1: pretrained {result.knn_top1:.4f} | random init {result.baseline_top1:.4f} "
              f"(+{100 * (result.knn_top1 - result.baseline_top1):.1f} points)")
    if args.json:
        print(json.dumps(summary))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mocokit",
        description="Momentum Contrast (MoCo v1, v2, v3): self-supervised pretraining and evaluation.",
        epilog="Run `mocokit COMMAND --help` for a command's options. Config keys are documented in the README.",
    )
    parser.add_argument("--version", action="version", version=f"mocokit {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    pretrain = commands.add_parser(
        "pretrain", help="pretrain an encoder with MoCo",
        description="Pretrain with MoCo into a run folder (run.dir). Interrupted runs continue with resume=auto "
                    "(the default) when started again with the same run.dir.",
    )
    _add_config_arguments(pretrain)
    pretrain.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    pretrain.set_defaults(handler=cmd_pretrain)

    presets = commands.add_parser("presets", help="list the config presets", description="List the presets.")
    presets.set_defaults(handler=cmd_presets)
    return parser


def main(argv: list[str] | None = None) -> int:
    from mocokit.config import ConfigError
    from mocokit.data import DataError
    from mocokit.engine.checkpoint import CheckpointError
    from mocokit.engine.loop import NonFiniteLoss

    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except (ConfigError, DataError, CheckpointError, FileExistsError, FileNotFoundError) as error:
        print(f"mocokit: error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except NonFiniteLoss as error:
        print(f"mocokit: training stopped: {error}", file=sys.stderr)
        return EXIT_TRAINING_FAILED
    except KeyboardInterrupt:
        print("mocokit: interrupted; the last checkpoint is kept (continue with resume=auto)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
