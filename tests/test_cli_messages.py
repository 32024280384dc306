"""What the `mocokit` command prints on the way (issue 17): warnings as one clean line each with a count of the
unreadable images, Ctrl-C messages that say only what is true, usage lines that say what is required."""

from pathlib import Path

import pytest

from mocokit.cli import main

from .engine.conftest import write_image_folder

TINY = ["model.width=0.125", "model.queue_size=32", "model.bn_splits=2", "train.batch_size=8", "train.epochs=1",
        "data.num_workers=0", "run.log_every_steps=1", "run.tensorboard=false", "run.progress=false",
        "monitor.knn_k=5", "train.threads=1"]


def image_folder(root: Path, classes: int = 3, per_class: int = 8, corrupt: tuple[str, ...] = ()) -> Path:
    """tests/engine/conftest.py's image folder; the files named in `corrupt` (relative paths) are overwritten with
    bytes that are no image."""
    write_image_folder(root, classes, per_class)
    for name in corrupt:
        (root / name).write_bytes(b"these bytes are not an image")
    return root


@pytest.fixture(scope="module")
def folder_with_corrupt_images(tmp_path_factory) -> Path:
    return image_folder(tmp_path_factory.mktemp("images"), corrupt=("train/class0/0.png", "test/class1/1.png"))


def _warnings(err: str) -> list[str]:
    return [line for line in err.splitlines() if "warning" in line.lower()]


@pytest.fixture(scope="module")
def finished_run(folder_with_corrupt_images, tmp_path_factory) -> tuple[Path, str]:
    """A one-epoch run on the folder with two corrupt images: (run folder, what the command wrote to stderr)."""
    import contextlib
    import io

    run_dir, err = tmp_path_factory.mktemp("runs") / "run", io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(["pretrain", "v2-cifar10", *TINY, f"data.path={folder_with_corrupt_images}",
                     f"run.dir={run_dir}", "data.max_bad_fraction=0.2"]) == 0
    return run_dir, err.getvalue()


def test_warnings_are_one_clean_line_each_with_a_count_of_unreadable_images(finished_run):
    lines = _warnings(finished_run[1])
    assert lines and all(line.startswith("mocokit: warning: ") for line in lines), lines
    assert not any("BytesIO" in line or ".py:" in line or "UserWarning" in line for line in lines), lines
    for name in ("train/class0/0.png", "test/class1/1.png"):  # the training data and the kNN bank read it: once
        assert sum(f"skipping unreadable image '{name}'" in line for line in lines) == 1, lines
    queue = [line for line in lines if "model.queue_size=32 is not smaller than the dataset" in line]
    assert len(queue) == 1
    assert lines[-1] == ("mocokit: warning: 2 unreadable images were skipped in all (each named above); fix or "
                         "delete those files")


def test_the_first_ctrl_c_is_acknowledged_at_once(capsys):
    import os
    import signal

    from mocokit.training.interrupt import GracefulStop

    with GracefulStop() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.requested and stop.signal_name == "SIGINT"
        assert "SIGINT received: finishing the current step, then saving a checkpoint" in capsys.readouterr().err
        with pytest.raises(KeyboardInterrupt):  # the second press stops at once
            os.kill(os.getpid(), signal.SIGINT)


def _interrupt_pretraining(monkeypatch):
    import mocokit.engine.pretrain

    def interrupted(cfg, *args, **kwargs):
        raise KeyboardInterrupt  # a Ctrl-C before the graceful stop is installed, or a second one

    monkeypatch.setattr(mocokit.engine.pretrain, "pretrain", interrupted)


def test_a_ctrl_c_before_the_first_checkpoint_does_not_claim_one(monkeypatch, tmp_path, capsys):
    _interrupt_pretraining(monkeypatch)
    assert main(["pretrain", "v2-cifar10", f"run.dir={tmp_path / 'new-run'}"]) == 130
    err = capsys.readouterr().err
    assert "interrupted before the first checkpoint was written" in err and "is kept" not in err


def test_a_ctrl_c_after_a_checkpoint_names_the_one_kept(finished_run, monkeypatch, capsys):
    _interrupt_pretraining(monkeypatch)
    assert main(["pretrain", "v2-cifar10", f"run.dir={finished_run[0]}"]) == 130
    err = capsys.readouterr().err
    assert f"the last checkpoint ({finished_run[0] / 'checkpoints' / 'last.pt'}) is kept" in err


def test_stop_at_step_is_never_passed_even_when_the_command_is_run_again(folder_with_corrupt_images, tmp_path,
                                                                         capsys):
    from mocokit.training.checkpoint import load_checkpoint

    command = ["pretrain", "v2-cifar10", *TINY, "train.batch_size=4", "model.queue_size=16", "train.epochs=2",
               "monitor.knn_every_epochs=0", f"data.path={folder_with_corrupt_images}", "data.max_bad_fraction=0.2",
               f"run.dir={tmp_path / 'run'}", "train.stop_at_step=2"]
    for _ in range(2):
        assert main(command) == 0
        assert "stopped at step 2 (train.stop_at_step)" in capsys.readouterr().out
        assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["step"] == 2


def test_usage_lines_say_what_is_required(capsys):
    with pytest.raises(SystemExit):
        main(["pretrain"])
    err = capsys.readouterr().err
    assert "required: config" in err and "key=value" not in err.splitlines()[-1]
    with pytest.raises(SystemExit):
        main(["embed"])
    err = capsys.readouterr().err
    assert "--out FILE.npz" in err and "[--out" not in err and "required: run" in err
    assert "key=value" not in err.splitlines()[-1]


def test_a_section_check_is_not_prefixed_twice(capsys):
    assert main(["pretrain", "v2-cifar10", "optim.lr=-1"]) == 2
    assert capsys.readouterr().err.strip() == "mocokit: error: optim.lr must be > 0, got -1.0"


def test_a_stopped_run_without_run_dir_names_the_folder_to_continue_in(tmp_path, monkeypatch, capsys):
    """run.dir empty: every command makes a new timestamped folder, so "the same command" would start over."""
    monkeypatch.chdir(tmp_path)
    folder = image_folder(tmp_path / "images")
    command = ["pretrain", "v2-cifar10", *TINY, "model.queue_size=16", "monitor.knn_every_epochs=0",
               f"data.path={folder}", "run.dir=", "train.stop_at_step=1"]
    assert main(command) == 0
    out = capsys.readouterr().out
    (made,) = (tmp_path / "runs").iterdir()
    assert f"run the same command with run.dir={Path('runs') / made.name}" in out
