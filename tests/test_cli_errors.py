"""How the command line reports failures: one line, the documented exit status, never a traceback for known ones."""

import errno

import pytest

from mocokit.cli import EXIT_TRAINING_FAILED, EXIT_USER_ERROR, main
from mocokit.commands import pretrain as pretrain_command
from mocokit.training.checkpoint import CheckpointWriteError
from mocokit.training.lock import RunFolderError, RunLocked


@pytest.mark.parametrize(
    "error,code,prefix",
    [
        (CheckpointWriteError("cannot write checkpoint runs/x/checkpoints/last.pt", errno.ENOSPC),
         EXIT_TRAINING_FAILED, "mocokit: training stopped: cannot write checkpoint"),
        (RunLocked("runs/x is in use by another `mocokit pretrain`"), EXIT_USER_ERROR, "mocokit: error: runs/x is in"),
        (RunFolderError("cannot create the run folder runs/x"), EXIT_USER_ERROR, "mocokit: error: cannot create"),
        (MemoryError(), EXIT_TRAINING_FAILED, "mocokit: out of memory"),
    ],
)
def test_known_failures_are_one_line_with_their_exit_status(monkeypatch, capsys, error, code, prefix):
    def fail(args):
        raise error

    monkeypatch.setattr(pretrain_command, "run", fail)
    assert main(["pretrain", "v2-cifar10"]) == code
    err = capsys.readouterr().err
    assert err.startswith(prefix) and len(err.strip().splitlines()) == 1


def test_an_unexpected_runtime_error_is_not_hidden(monkeypatch):
    def fail(args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(pretrain_command, "run", fail)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["pretrain", "v2-cifar10"])


def test_a_value_with_control_characters_is_echoed_escaped_on_one_line(tmp_path, capsys):
    """Found by the config property test: resume="0\\f" was echoed raw and split the message at the form feed."""
    from mocokit.cli import main

    status = main(["pretrain", "v2-cifar10", "resume=0\f", f"run.dir={tmp_path / 'run'}",
                   f"data.path={tmp_path / 'no-such-data'}"])
    lines = capsys.readouterr().err.splitlines()
    assert status == 2 and len(lines) == 1 and lines[0].startswith("mocokit: error: ") and "\\x0c" in lines[0]
