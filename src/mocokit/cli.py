"""The `mocokit` command: parses arguments and dispatches to one module per subcommand (`mocokit.commands`)."""

from __future__ import annotations

import argparse
import sys

from mocokit import __version__
from mocokit.commands import embed, export, finetune, knn, linear, presets, pretrain, transfer

# in the order `mocokit --help` lists them
COMMANDS = [pretrain, knn, linear, finetune, transfer, export, embed, presets]

EXIT_USER_ERROR = 2  # a bad config, bad data or an unusable checkpoint: the message says what to do
EXIT_TRAINING_FAILED = 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mocokit",
        description="Momentum Contrast (MoCo v1, v2, v3): self-supervised pretraining and evaluation.",
        epilog="Run `mocokit COMMAND --help` for a command's options; config keys are listed in the README.",
    )
    parser.add_argument("--version", action="version", version=f"mocokit {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    from mocokit.config import ConfigError
    from mocokit.data import DataError
    from mocokit.engine.checkpoint import CheckpointError
    from mocokit.engine.loop import NonFiniteLoss
    from mocokit.evaluation.classifier import BackboneChanged

    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (ConfigError, DataError, CheckpointError, FileExistsError, FileNotFoundError) as error:
        print(f"mocokit: error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except NonFiniteLoss as error:
        print(f"mocokit: training stopped: {error}", file=sys.stderr)
        return EXIT_TRAINING_FAILED
    except BackboneChanged as error:  # the linear probe's sanity check: a bug, reported without a traceback
        print(f"mocokit: sanity check failed: {error}", file=sys.stderr)
        return EXIT_TRAINING_FAILED
    except KeyboardInterrupt:
        print("mocokit: interrupted; the last checkpoint is kept (continue with resume=auto)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
