"""`torchrun -m mocokit pretrain` with two CPU processes: one set of outputs, resume on another number of processes,
and torchrun's elastic restart after a worker is killed."""

import json
import os
import signal
import subprocess
import sys
import time

from mocokit.engine.pretrain import pretrain
from mocokit.training.checkpoint import load_checkpoint

from .test_pretrain import TINY, tiny_config

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
STEPS_PER_EPOCH = 72 // 16  # the tiny image folder's 72 training images, global batch 16 (8 per process)


def pretrain_command(images, run_dir, *extra) -> list[str]:
    return ["-m", "mocokit", "pretrain", "v2-cifar10", *TINY, f"data.path={images}", f"run.dir={run_dir}",
            "train.device=cpu", *extra]


def run_torchrun(*args, timeout=300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([*TORCHRUN, *args], capture_output=True, text=True, timeout=timeout, env=env)


def records(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_two_processes_write_one_set_of_outputs_and_resume_on_one_process(tiny_images, tmp_path):
    run = tmp_path / "run"
    finished = run_torchrun(*pretrain_command(tiny_images, run))
    output = finished.stdout + finished.stderr
    assert finished.returncode == 0, output
    assert output.count("run folder:") == 1 and "batch 16 (2 processes)" in output  # rank 0 alone speaks
    assert output.count("kNN top-1: pretrained") == 1
    (summary,) = [line for line in output.splitlines() if line.startswith("kNN top-1: pretrained")]
    assert "| random init " in summary and "| raw pixels " in summary  # every baseline on the one line
    kinds = [r["kind"] for r in records(run)]
    assert kinds.count("epoch") == 2 and kinds.count("final") == 1 and kinds.count("baseline") == 1
    assert [r["step"] for r in records(run) if r["kind"] == "step"] == [2, 4, 6, 8]  # written once, not per rank
    saved = load_checkpoint(run / "checkpoints" / "last.pt")
    assert saved["step"] == 2 * STEPS_PER_EPOCH and saved["epoch"] == 2
    epoch_records = [r for r in records(run) if r["kind"] == "epoch"]
    assert epoch_records[-1]["knn_top1"] is not None  # the kNN monitor ran on both processes' shares

    # the same global batch on one process continues the run: same steps per epoch, same queue
    messages = []
    resumed = pretrain(tiny_config(tiny_images, run, "train.epochs=3", "train.device=cpu"), echo=messages.append)
    assert resumed.completed and resumed.steps_done == 3 * STEPS_PER_EPOCH
    assert any(f"step {2 * STEPS_PER_EPOCH}" in m and "resuming" in m for m in messages)
    continued = load_checkpoint(run / "checkpoints" / "last.pt")
    assert int(continued["model"]["queue.ptr"]) == (3 * STEPS_PER_EPOCH * 16) % 32


def test_an_elastic_restart_after_a_killed_worker_completes_the_run(tiny_images, tmp_path):
    run, epochs = tmp_path / "run", 10
    # 2 restarts allowed: one for the kill; a spare in case gloo fails to connect on a heavily loaded machine
    command = [*TORCHRUN, "--max-restarts=2",
               *pretrain_command(tiny_images, run, f"train.epochs={epochs}", "run.checkpoint_every_steps=2",
                                 "monitor.knn_every_epochs=0", "run.log_every_steps=1")]
    launcher = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})
    last = run / "checkpoints" / "last.pt"
    deadline = time.time() + 180
    while time.time() < deadline and not last.exists() and launcher.poll() is None:
        time.sleep(0.02)
    workers = subprocess.run(["pgrep", "-P", str(launcher.pid)], capture_output=True, text=True).stdout.split()
    assert len(workers) == 2, workers  # torchrun's two worker processes
    os.kill(int(workers[1]), signal.SIGKILL)
    output, _ = launcher.communicate(timeout=300)
    assert launcher.returncode == 0, output
    assert "resuming" in output  # the restarted workers continued from the checkpoint, not from scratch
    saved = load_checkpoint(last)
    assert saved["epoch"] == epochs and saved["step"] == epochs * STEPS_PER_EPOCH
    assert [r for r in records(run) if r["kind"] == "final"], "the restarted run finished and said so"
