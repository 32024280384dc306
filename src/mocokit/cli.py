"""The `mocokit` command: parses arguments and dispatches to one module per subcommand (`mocokit.commands`)."""

from __future__ import annotations

import argparse
import sys

from mocokit._version import __version__
from mocokit.commands import (
    config,
    embed,
    experiment,
    export,
    finetune,
    import_,
    knn,
    linear,
    presets,
    pretrain,
    transfer,
)

# in the order `mocokit --help` lists them
COMMANDS = [pretrain, knn, linear, finetune, transfer, export, import_, embed, experiment, config, presets]

EXIT_USER_ERROR = 2  # a bad config, bad data, an unusable checkpoint or run folder: nothing was trained or written
# The loss diverged, or a checkpoint could not be written (disk full, folder made read-only) while training: the
# last good checkpoint is kept and the run continues with resume=auto once the cause is fixed.
EXIT_TRAINING_FAILED = 1
# Every output file is written whole or not at all (mocokit/files.py), so an interrupted command leaves no part of one.
INTERRUPTED = "mocokit: interrupted; no partial output file was left (run the same command again)"


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
    from mocokit.training.process import configure_process, one_line_warnings

    args = build_parser().parse_args(argv)
    configure_process()  # settings for the whole process: here, never inside the library (training/process.py)
    try:
        with one_line_warnings():  # `mocokit: warning: ...`, one line each, and the count of unreadable images
            return args.handler(args)
    except Exception as error:
        status = _report(error)
        if status is None:
            raise
        return status
    except KeyboardInterrupt:
        # a command that has more to say (pretrain: which checkpoint is kept, if any) sets args.on_interrupt
        on_interrupt = getattr(args, "on_interrupt", None)
        print(on_interrupt() if on_interrupt is not None else INTERRUPTED, file=sys.stderr)
        return 130


def _report(error: Exception) -> int | None:
    """Print a one-line message for an error the user can act on and return the exit status; None for any other
    error (a bug: it is raised with its traceback). The error classes are imported here, after a command failed,
    so that `mocokit --help` and `mocokit presets` import no heavy library (a command that raised one of them has
    already imported its module)."""
    from mocokit.data import DataError
    from mocokit.errors import ConfigError, NonFiniteLoss
    from mocokit.evaluation.classifier import BackboneChanged
    from mocokit.training.checkpoint import CheckpointError, CheckpointWriteError
    from mocokit.training.lock import RunFolderError

    if isinstance(error, CheckpointWriteError):
        print(f"mocokit: training stopped: {_one_line(error)}", file=sys.stderr)
        return EXIT_TRAINING_FAILED
    if isinstance(error, (ConfigError, DataError, CheckpointError, RunFolderError, FileExistsError,
                          FileNotFoundError)):
        print(f"mocokit: error: {_one_line(error)}", file=sys.stderr)
        return EXIT_USER_ERROR
    if isinstance(error, NonFiniteLoss):
        print(f"mocokit: training stopped: {_one_line(error)}", file=sys.stderr)
        return EXIT_TRAINING_FAILED
    if isinstance(error, BackboneChanged):  # the linear probe's sanity check: a bug, reported without a traceback
        print(f"mocokit: sanity check failed: {_one_line(error)}", file=sys.stderr)
        return EXIT_TRAINING_FAILED
    if isinstance(error, (MemoryError, RuntimeError)) and _out_of_memory(error):
        print(f"mocokit: out of memory ({(str(error).splitlines() or [''])[0][:200]}); lower train.batch_size, "
              "data.image_size or the model's size (the last checkpoint is kept)", file=sys.stderr)
        return EXIT_TRAINING_FAILED
    return None


def _one_line(error: BaseException) -> str:
    """The message with any control character a user's value brought in (a newline, a form feed) escaped, so that
    an error stays one line whatever the input."""
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in str(error))


def _out_of_memory(error: BaseException) -> bool:
    """Python's MemoryError, or PyTorch's for a GPU (torch.cuda.OutOfMemoryError, a RuntimeError)."""
    torch = sys.modules.get("torch")
    return isinstance(error, MemoryError) or (torch is not None and isinstance(error, torch.cuda.OutOfMemoryError))


if __name__ == "__main__":
    sys.exit(main())
