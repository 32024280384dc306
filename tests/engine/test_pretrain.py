"""End-to-end pretraining on a tiny generated image folder: run folder, exact resume, NaN stop, refusals."""

import json
import math

import pytest
import torch

import mocokit
from mocokit.engine.pretrain import pretrain
from mocokit.errors import ConfigError, NonFiniteLoss
from mocokit.training.checkpoint import load_checkpoint
from mocokit.training.run_config import load_config

TINY = [
    "model.width=0.125", "model.queue_size=32", "model.bn_splits=2", "train.batch_size=16", "train.epochs=2",
    "train.deterministic=true", "data.num_workers=0", "run.log_every_steps=2", "run.tensorboard=false",
    "run.progress=false", "monitor.knn_k=5", "train.threads=1",
]


def tiny_config(images, run_dir, *extra, preset="v2-cifar10"):
    return load_config(preset, [*TINY, f"data.path={images}", f"run.dir={run_dir}", *extra])


def final_weights(run_dir):
    return load_checkpoint(run_dir / "checkpoints" / "last.pt")["model"]


# K = 48 does not divide the 8 steps x 32 keys (2 views x 16, symmetric loss) of the run below: a queue pointer that
# never moves (0), moves by one view's keys (128 mod 48 = 32) or resets when it wraps gives another value than 16.
# lr 12 (0.75 after the batch-16 scaling) makes 8 steps learn visibly: the preset's 0.03 moves nothing in 8 steps.
LEARNING = ["model.queue_size=48", "optim.lr=12"]


def test_a_run_writes_its_folder_and_learns_nothing_silently(tiny_images, tmp_path):
    run = tmp_path / "run"
    cfg = tiny_config(tiny_images, run, *LEARNING)
    result = pretrain(cfg, echo=lambda _m: None)
    assert result.completed and result.epochs_done == 2 and result.steps_done == 2 * (72 // 16)
    assert (run / "config.yaml").is_file() and (run / "report.html").is_file()
    assert load_config(run / "config.yaml").model.queue_size == 48  # the resolved config reloads
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    kinds = [r["kind"] for r in records]
    assert kinds.count("epoch") == 2 and "baseline" in kinds and [k for k in kinds if k != "warnings"][-1] == "final"
    (start,) = [r for r in records if r["kind"] == "run"]  # how the run was made, for its report
    assert start["torch"] == torch.__version__ and start["mocokit"] == mocokit.__version__ and start["command"]
    steps = [r for r in records if r["kind"] == "step"]
    assert [r["step"] for r in steps] == [2, 4, 6, 8]
    assert all(set(r) >= {"loss", "lr", "momentum", "images_per_s", "grad_norm"} for r in steps)
    assert all(len(r["grad_norm"]) == 3 for r in steps)  # first and last backbone layer, last head layer
    assert result.knn_top1 is not None and result.baseline_top1 is not None
    payload = load_checkpoint(run / "checkpoints" / "last.pt")
    assert payload["step"] == 8 and payload["epoch"] == 2
    keys_per_step = (2 if cfg.model.symmetric else 1) * cfg.train.batch_size  # each view's keys, once
    assert "queue.keys" in payload["model"]
    assert int(payload["model"]["queue.ptr"]) == (8 * keys_per_step) % 48 == 16

    # It learned: an encoder that learns nothing gives the positive key no edge over the 48 negatives, and each of
    # the two loss terms stays near log(K+1), the closed form for equal logits (measured: 7.9 for a run whose
    # optimiser never steps, 2 log 49 = 7.78). After one epoch of real steps the second epoch's mean is far below.
    second_epoch = [r for r in records if r["kind"] == "epoch"][1]
    chance = (2 if cfg.model.symmetric else 1) * math.log(48 + 1)
    assert second_epoch["loss"] < chance - 1.0, (second_epoch["loss"], chance)

    again = pretrain(tiny_config(tiny_images, run, *LEARNING), echo=lambda _m: None)  # `make demo` run twice
    assert again.completed and again.steps_done == 8 and again.knn_top1 == result.knn_top1
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 8


@pytest.mark.parametrize("augment", ["per_image", "batched"])
@pytest.mark.parametrize("stop", [3, 4])  # mid-epoch, and exactly at an epoch boundary
def test_an_interrupted_deterministic_run_resumes_to_the_same_weights(tiny_images, tmp_path, augment, stop):
    extra = [f"data.augment={augment}"]
    pretrain(tiny_config(tiny_images, tmp_path / "straight", *extra), echo=lambda _m: None)
    first = pretrain(tiny_config(tiny_images, tmp_path / "resumed", *extra, f"train.stop_at_step={stop}"),
                     echo=lambda _m: None)
    assert not first.completed and first.steps_done == stop
    torch.manual_seed(999)  # whatever state the process is in, the checkpoint restores it
    second = pretrain(tiny_config(tiny_images, tmp_path / "resumed", *extra), echo=lambda _m: None)
    assert second.completed and second.steps_done == 8
    straight, resumed = final_weights(tmp_path / "straight"), final_weights(tmp_path / "resumed")
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key


def test_a_resumed_run_continues_the_step_count_lr_schedule_and_queue_pointer_in_closed_form(tiny_images, tmp_path):
    """Against closed forms, not against a straight run: the step counter, the cosine lr at every logged step of
    both processes, and the queue pointer (K = 56 divides neither 3 nor 8 steps of 32 keys)."""
    run, extra = tmp_path / "run", ["model.queue_size=56", "run.log_every_steps=1", "monitor.knn_every_epochs=0"]
    first = pretrain(tiny_config(tiny_images, run, *extra, "train.stop_at_step=3"), echo=lambda _m: None)
    cfg = tiny_config(tiny_images, run, *extra)
    keys_per_step = (2 if cfg.model.symmetric else 1) * cfg.train.batch_size
    saved = load_checkpoint(run / "checkpoints" / "last.pt")
    assert not first.completed and saved["step"] == 3 and int(saved["model"]["queue.ptr"]) == 3 * keys_per_step % 56
    second = pretrain(cfg, echo=lambda _m: None)
    assert second.completed and second.steps_done == 8
    saved = load_checkpoint(run / "checkpoints" / "last.pt")
    assert saved["step"] == 8 and saved["epoch"] == 2
    assert int(saved["model"]["queue.ptr"]) == 8 * keys_per_step % 56  # 32; a restarted pointer would say 48

    # lr of step s (1-based; it ran as step s-1 of 8): linear scaling, then a half-cosine to 0, no warm-up
    assert cfg.optim.schedule == "cosine" and cfg.optim.warmup_epochs == 0 and cfg.optim.scale_lr
    peak = cfg.optim.lr * cfg.train.batch_size / 256
    steps = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in steps if r["kind"] == "step"]
    assert [r["step"] for r in steps] == list(range(1, 9))  # the resumed process goes on from 4, not from 1
    for r in steps:
        expected = peak * 0.5 * (1 + math.cos(math.pi * (r["step"] - 1) / 8))
        assert r["lr"] == pytest.approx(expected, rel=1e-9), r["step"]
        assert r["momentum"] == pytest.approx(cfg.model.momentum)  # v2: constant


def test_v3_preset_trains_with_lars_and_the_momentum_schedule(tiny_images, tmp_path):
    cfg = tiny_config(tiny_images, tmp_path / "v3", "model.hidden_dim=64", "model.dim=32", "model.bn_splits=1",
                      preset="v3-cifar10")
    result = pretrain(cfg, echo=lambda _m: None)
    steps = [json.loads(line) for line in (tmp_path / "v3" / "metrics.jsonl").read_text().splitlines()]
    momenta = [r["momentum"] for r in steps if r["kind"] == "step"]
    assert result.completed and momenta == sorted(momenta) and 0.99 <= momenta[0] < momenta[-1] <= 1.0


def test_a_nan_loss_stops_the_run_naming_the_step_and_keeps_the_last_good_checkpoint(tiny_images, tmp_path):
    cfg = tiny_config(tiny_images, tmp_path / "nan", "optim.lr=1e30", "run.checkpoint_every_steps=1",
                      "run.log_every_steps=1", "optim.schedule=constant")
    with pytest.raises(NonFiniteLoss, match=r"at step \d+") as error:
        pretrain(cfg, echo=lambda _m: None)
    bad_step = int(str(error.value).split("at step ")[1].split(";")[0])
    payload = load_checkpoint(tmp_path / "nan" / "checkpoints" / "last.pt")
    assert payload["step"] == bad_step - 1
    assert all(torch.isfinite(t).all() for t in payload["model"].values() if t.is_floating_point())


def test_resume_refuses_another_model_and_none_refuses_to_overwrite(tiny_images, tmp_path):
    pretrain(tiny_config(tiny_images, tmp_path / "run", "train.stop_at_step=2"), echo=lambda _m: None)
    with pytest.raises(ConfigError, match="model.dim: 128 in the checkpoint, 64 now"):
        pretrain(tiny_config(tiny_images, tmp_path / "run", "model.dim=64"), echo=lambda _m: None)
    with pytest.raises(FileExistsError, match="resume=auto"):
        pretrain(tiny_config(tiny_images, tmp_path / "run", "resume=none"), echo=lambda _m: None)


def test_ctrl_c_checkpoints_at_a_step_boundary_and_the_run_continues(tiny_images, tmp_path):
    """A real process gets SIGINT mid-run: it finishes the step, saves, exits 130; the same command completes."""
    import signal
    import subprocess
    import sys
    import time

    run = tmp_path / "run"
    command = [sys.executable, "-m", "mocokit", "pretrain", "v2-cifar10", *TINY, f"data.path={tiny_images}",
               f"run.dir={run}", "train.epochs=10", "run.log_every_steps=1", "monitor.knn_every_epochs=0"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    metrics = run / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.exists() and metrics.read_text().count('"kind": "step"') >= 6):
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 130, output
    assert "SIGINT received" in output and "Traceback" not in output
    saved = load_checkpoint(run / "checkpoints" / "last.pt")
    assert 6 <= saved["step"] < 10 * 4
    finished = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert f"epoch {saved['epoch']}, step {saved['step']}" in finished.stdout  # it resumed, not restarted
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 10 * 4


@pytest.mark.parametrize("augment", ["per_image", "batched"])
def test_the_memory_bank_trains_on_a_subset_with_one_row_per_subset_image(tiny_images, tmp_path, augment):
    # 72 images, 32 drawn: their dataset indices reach 71, the bank's rows are their positions in the subset 0..31
    # (before the fix, a dataset index past row 31 was an IndexError in the first epoch)
    cfg = tiny_config(tiny_images, tmp_path / "bank", "model.dictionary=memory_bank", "model.queue_size=16",
                      "data.max_images=32", f"data.augment={augment}", "monitor.knn_every_epochs=0")
    result = pretrain(cfg, echo=lambda _m: None)
    assert result.completed
    bank = final_weights(tmp_path / "bank")["memory_bank.features"]
    assert bank.shape == (32, 128) and torch.allclose(bank.norm(dim=1), torch.ones(32), atol=1e-4)
