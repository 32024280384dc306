"""kill -9 at chosen and random moments, then `resume=auto`: the run completes with exactly the weights of a run that
was never interrupted (train.deterministic=true), and a second `pretrain` into a live run's folder is refused.

One run folder goes through a chain of `mocokit pretrain` processes, each SIGKILLed at another point
(MOCOKIT_FAULT, see mocokit.training.faults) or from outside at a random moment; after each kill the folder's
checkpoints must read back intact. The last process, a plain `python -m mocokit pretrain` without a fault, finishes
the run. The killed processes are forked from one interpreter that has already imported mocokit (each then runs
`mocokit.cli.main` exactly as the command does): that saves the 5 s of imports each fresh process would spend.
"""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from mocokit.cli import main
from mocokit.engine.pretrain import pretrain
from mocokit.training.checkpoint import load_checkpoint
from mocokit.training.run_config import load_config

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL and flock: POSIX only")

# 72 training images, batch 16: 4 steps per epoch, 2 epochs; `last` every 2 steps, kNN monitor after each epoch.
ARGS = [
    "model.width=0.125", "model.queue_size=32", "model.bn_splits=2", "train.batch_size=16", "train.epochs=2",
    "train.deterministic=true", "train.threads=1", "data.num_workers=0", "run.log_every_steps=2",
    "run.checkpoint_every_steps=2", "run.tensorboard=false", "run.progress=false", "monitor.knn_k=5",
    "monitor.knn_every_epochs=1", "monitor.knn_baseline=false",
]


def command(images, run):
    return ["pretrain", "v2-cifar10", *ARGS, f"data.path={images}", f"run.dir={run}"]


SERVER = r"""
import json, os, sys, traceback
from mocokit.cli import main
import mocokit.engine.pretrain  # the slow imports, once

for line in sys.stdin:
    job = json.loads(line)
    pid = os.fork()
    if pid == 0:  # the child: `mocokit ARGV`, its output into the job's log file
        code = 1
        try:
            log = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(log, 1)
            os.dup2(log, 2)
            os.environ.pop("MOCOKIT_FAULT", None)
            os.environ.update(job["env"])
            code = main(job["argv"])
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    print("started", pid, flush=True)
    _, status = os.waitpid(pid, 0)
    print("ended", -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status), flush=True)
"""


class ForkServer:
    """Runs `mocokit ARGV` in processes forked from a warm interpreter, one at a time; like subprocess.Popen, a
    return code of -9 means killed by SIGKILL."""

    def __init__(self, folder) -> None:
        self.folder, self.jobs = folder, 0
        self.server = subprocess.Popen([sys.executable, "-c", SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       text=True)

    def start(self, argv, fault=None) -> int:
        self.jobs += 1
        self.log = self.folder / f"job{self.jobs}.log"
        job = {"argv": argv, "env": {"MOCOKIT_FAULT": fault} if fault else {}, "log": str(self.log)}
        self.server.stdin.write(json.dumps(job) + "\n")
        self.server.stdin.flush()
        word, pid = self.server.stdout.readline().split()
        assert word == "started"
        return int(pid)

    def wait(self) -> tuple[int, str]:
        word, code = self.server.stdout.readline().split()
        assert word == "ended"
        return int(code), self.log.read_text()

    def close(self) -> None:
        self.server.stdin.close()
        self.server.wait(timeout=60)


@pytest.fixture
def fork_server(tmp_path):
    server = ForkServer(tmp_path)
    yield server
    server.close()


def killed_at(server, images, run, fault):
    pid = server.start(command(images, run), fault)
    code, output = server.wait()
    assert code == -signal.SIGKILL, output
    assert f"MOCOKIT_FAULT: killing process {pid} at {fault.replace(':', ' #')}" in output
    return output


def saved(run, name="last.pt"):
    payload = load_checkpoint(run / "checkpoints" / name)  # raises if the file is partial or damaged
    return payload["step"], payload["epoch"]


@pytest.fixture(scope="module")
def reference_weights(tiny_images, tmp_path_factory):
    """The final weights of the same run, never interrupted (in this process: the same deterministic kernels)."""
    run = tmp_path_factory.mktemp("reference") / "run"
    cfg = load_config("v2-cifar10", [*ARGS, f"data.path={tiny_images}", f"run.dir={run}"])
    assert pretrain(cfg, echo=lambda _m: None).completed
    return load_checkpoint(run / "checkpoints" / "last.pt")["model"]


def test_killed_at_every_point_the_run_resumes_to_the_uninterrupted_weights(tiny_images, tmp_path, capsys,
                                                                            fork_server, reference_weights):
    run = tmp_path / "run"
    folder = run / "checkpoints"

    # 1. mid-training: step 3 applied but not yet checkpointed -> the run continues from step 2
    killed_at(fork_server, tiny_images, run, "step:3")
    assert saved(run) == (2, 0)

    # 2. while writing a checkpoint (the 2nd of this process: the one after epoch 1's kNN) -> a partial temporary
    #    file, never a partial last.pt
    killed_at(fork_server, tiny_images, run, "checkpoint-write:2")
    assert saved(run) == (4, 0) and saved(run, "previous.pt") == (2, 0)
    assert list(folder.glob(".last.pt.*.tmp"))

    # 3. inside the kNN monitor at the end of epoch 1 -> nothing of the epoch end was written
    killed_at(fork_server, tiny_images, run, "knn:1")
    assert saved(run) == (4, 0)

    # 4. between keeping the old checkpoint as previous.pt and renaming the new one to last.pt -> both intact
    killed_at(fork_server, tiny_images, run, "checkpoint-rotate:1")
    assert saved(run) == (4, 0) and saved(run, "previous.pt") == (4, 0)

    # 5. from outside, at a random moment of a live run; while it runs, a second pretrain into its folder is refused
    pid = fork_server.start(command(tiny_images, run))
    lock = run / ".lock"
    deadline = time.time() + 120
    while time.time() < deadline and f"pid {pid} " not in (lock.read_text() if lock.exists() else ""):
        time.sleep(0.05)
    capsys.readouterr()
    before = sorted(p.name for p in run.rglob("*"))
    assert main(command(tiny_images, run)) == 2
    error = capsys.readouterr().err
    assert f"is in use by another `mocokit pretrain` (pid {pid} on" in error and "Traceback" not in error
    delay = random.uniform(0.0, 1.0)
    time.sleep(delay)
    os.kill(pid, signal.SIGKILL)
    code, output = fork_server.wait()
    assert code == -signal.SIGKILL, f"the run ended before the kill {delay:.2f} s after the refusal\n{output}"
    assert sorted(p.name for p in run.rglob("*")) >= before  # the refused command removed nothing
    step, _epoch = saved(run)
    assert step >= 4

    # 6. the same command once more: it takes the lock of the killed process over and finishes
    finished = subprocess.run([sys.executable, "-m", "mocokit", *command(tiny_images, run)], text=True,
                              capture_output=True, timeout=300, env={**os.environ, "MOCOKIT_FAULT": ""})
    output = finished.stdout + finished.stderr
    assert finished.returncode == 0, output
    assert "resuming" in output and "Traceback" not in output
    assert saved(run) == (8, 2)
    # no temporary file left; best.pt: the epoch the label-free score ranked best
    assert sorted(p.name for p in folder.iterdir()) == ["best.pt", "last.pt", "previous.pt"]
    assert not lock.exists()
    weights = load_checkpoint(folder / "last.pt")["model"]
    assert weights.keys() == reference_weights.keys()
    for key, value in reference_weights.items():
        assert torch.equal(weights[key], value), key


def test_a_full_disk_then_a_damaged_last_checkpoint_lose_nothing(tiny_images, tmp_path, capsys, monkeypatch,
                                                                  reference_weights):
    """The disk fills up at the epoch-end checkpoint: exit 1 naming the file and the cause, last.pt intact. Then
    last.pt is damaged on disk: resume=auto says so, continues from previous.pt, and ends with the same weights."""
    run = tmp_path / "run"
    folder = run / "checkpoints"
    real_fdopen, opened = os.fdopen, []

    def fdopen(fd, mode="r", *args, **kwargs):  # only checkpoint writes use os.fdopen; the 3rd finds the disk full
        handle = real_fdopen(fd, mode, *args, **kwargs)
        opened.append(fd)
        return FullDisk(handle) if len(opened) == 3 else handle

    monkeypatch.setattr(os, "fdopen", fdopen)
    assert main(command(tiny_images, run)) == 1
    monkeypatch.undo()
    error = capsys.readouterr().err
    assert error.startswith(f"mocokit: training stopped: cannot write checkpoint {folder / 'last.pt'} (No space left")
    assert "the disk is full" in error and "Traceback" not in error
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == []  # lock released, nothing partial
    assert sorted(p.name for p in folder.iterdir()) == ["last.pt", "previous.pt"]
    assert saved(run) == (4, 0) and saved(run, "previous.pt") == (2, 0)

    data = bytearray((folder / "last.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / "last.pt").write_bytes(bytes(data))
    messages = []
    cfg = load_config("v2-cifar10", [*ARGS, f"data.path={tiny_images}", f"run.dir={run}"])
    assert pretrain(cfg, echo=messages.append).completed
    assert any(f"using {folder / 'previous.pt'}" in m and f"{folder / 'last.pt'}" in m for m in messages), messages
    weights = load_checkpoint(folder / "last.pt")["model"]
    assert all(torch.equal(weights[key], value) for key, value in reference_weights.items())


class FullDisk:
    """A file whose writes fail with ENOSPC, as on a full disk."""

    def __init__(self, handle) -> None:
        self.handle = handle

    def write(self, data):
        raise OSError(28, os.strerror(28))

    def __getattr__(self, name):
        return getattr(self.handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.close()


def test_killed_between_the_last_step_and_its_epoch_end_the_rerun_ends_that_epoch(tiny_images, tmp_path,
                                                                                  fork_server, reference_weights):
    """The last step's own checkpoint (run.checkpoint_every_steps) holds step 8 of 8 but epoch 1: a rerun has no step
    left to train and must still end epoch 2 (kNN, health, the epoch-2 checkpoint), not call the run complete."""
    run = tmp_path / "run"
    killed_at(fork_server, tiny_images, run, "knn:2")  # inside epoch 2's kNN, after step 8 was checkpointed
    assert saved(run) == (8, 1)
    finished = subprocess.run([sys.executable, "-m", "mocokit", *command(tiny_images, run)], text=True,
                              capture_output=True, timeout=300, env={**os.environ, "MOCOKIT_FAULT": ""})
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert "nothing to train" not in finished.stdout and "epoch 2/2" in finished.stdout
    assert saved(run) == (8, 2)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if r["kind"] == "epoch"] == [1, 2]
    weights = load_checkpoint(run / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(weights[key], value) for key, value in reference_weights.items())
