"""A synthetic run folder, shaped like the engine's, for the reporting tests."""

import math
from pathlib import Path

import pytest
import yaml

from mocokit.reporting import MetricsWriter

STEPS_PER_EPOCH = 20
LAYERS = ("patch_embed.proj", "head.fc")


def _step_record(step: int, loss: float | None = None, spike: bool = False) -> dict:
    """A step record as the engine logs it; the first layer's gradient norm is ×50 when `spike`."""
    return {
        "kind": "step", "step": step, "epoch": step / STEPS_PER_EPOCH,
        "loss": 8.0 * math.exp(-step / 50) + 2.0 if loss is None else loss,
        "accuracy": 1 - math.exp(-step / 40), "lr": 0.03 * min(1.0, step / 20),
        "momentum": 0.99 + step * 1e-5,
        "images_per_s": 500.0, "grad_norm": {LAYERS[0]: (50.0 if spike else 1.0) + 0.01 * (step % 3),
                                             LAYERS[1]: 0.5 + 0.01 * (step % 2)},
        "time": 1_700_000_000.0 + step,
    }


def _epoch_record(epoch: int, knn: float | None) -> dict:
    step = epoch * STEPS_PER_EPOCH
    return {"kind": "epoch", "epoch": epoch, "step": step, "loss": 3.0, "accuracy": 0.5,
            "epoch_seconds": 20.0, "knn_top1": knn, "knn_top5": None if knn is None else knn + 0.2,
            "time": 1_700_000_000.0 + step}


def _write_run(run_dir: Path, epochs: int = 3, knn: bool = True, spike_at: int | None = None) -> Path:
    """A finished run: config.yaml, a baseline, step records every 2 steps, epoch records, a final record."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(
        {"name": "v3-vit-cifar10", "model": {"version": "v3", "backbone": "vit_small"},
         "data": {"path": "<b>data & more</b>"}, "optim": {"lr": 1.5e-4, "betas": [0.9, 0.95]}}))
    with MetricsWriter(run_dir, tensorboard=False) as metrics:
        if knn:
            metrics.log({"kind": "baseline", "step": 0, "knn_top1": 0.2, "knn_top5": 0.5,
                         "time": 1_700_000_000.0})
        for epoch in range(1, epochs + 1):
            for step in range((epoch - 1) * STEPS_PER_EPOCH + 2, epoch * STEPS_PER_EPOCH + 1, 2):
                metrics.log(_step_record(step, spike=step == spike_at))
            metrics.log(_epoch_record(epoch, 0.3 + 0.1 * epoch if knn else None))
        metrics.log({"kind": "final", "step": epochs * STEPS_PER_EPOCH, "epoch": epochs, "minutes": 1.5,
                     "knn_top1": 0.3 + 0.1 * epochs if knn else None, "time": 1_700_000_100.0})
    return run_dir


@pytest.fixture
def step_record():
    """The step-record builder: step_record(step, loss=None, spike=False) -> dict."""
    return _step_record


@pytest.fixture
def epoch_record():
    """The epoch-record builder: epoch_record(epoch, knn) -> dict."""
    return _epoch_record


@pytest.fixture
def write_run():
    """The run-folder builder: write_run(run_dir, epochs=3, knn=True, spike_at=None) -> run_dir."""
    return _write_run


@pytest.fixture
def finished_run(tmp_path: Path) -> Path:
    """A finished 3-epoch run with kNN, a baseline, and a first-layer gradient-norm spike at step 40."""
    return _write_run(tmp_path / "finished-run", spike_at=40)
