"""checkpoints/best.pt: the epoch whose label-free score (the embeddings' uniformity) is the lowest so far is kept,
marked in metrics.jsonl and the report, survives a resume, and `RUN@best` evaluates it."""

import json

import pytest

from mocokit.engine.health_monitor import HealthMonitor
from mocokit.engine.pretrain import BEST_SCORE, is_new_best, pretrain
from mocokit.evaluation.pretrained import load_pretrained
from mocokit.training.checkpoint import CheckpointError, load_checkpoint
from mocokit.training.run_config import load_config

TINY = [  # 72 generated images, 4 steps per epoch
    "model.width=0.125", "model.queue_size=32", "model.bn_splits=2", "train.batch_size=16", "train.epochs=3",
    "train.deterministic=true", "data.num_workers=0", "run.log_every_steps=2", "run.tensorboard=false",
    "run.progress=false", "train.threads=1", "monitor.knn_every_epochs=0", "monitor.health_images=40",
    "optim.lr=12",  # large enough that 12 steps move the features (test_pretrain.py)
]


def epoch_records(run_dir):
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if r["kind"] == "epoch"]


def expected_bests(records):
    """The epochs a running minimum of the uniformity passes through (a slow loop, ties keep the earlier epoch)."""
    best, marks = None, []
    for record in records:
        if best is None or record["uniformity"] < best:
            best = record["uniformity"]
            marks.append(record["epoch"])
    return marks


def test_the_new_best_rule():
    assert BEST_SCORE == "uniformity"  # lower is better: log E exp(-2 |zi - zj|^2)
    assert is_new_best({"uniformity": -1.0}, None) and not is_new_best({"loss": 1.0}, None)
    assert is_new_best({"uniformity": -1.5}, {"epoch": 1, "uniformity": -1.0})
    assert not is_new_best({"uniformity": -0.5}, {"epoch": 1, "uniformity": -1.0})
    assert not is_new_best({"uniformity": -1.0}, {"epoch": 1, "uniformity": -1.0})  # a tie keeps the earlier one


@pytest.fixture
def scripted_scores(monkeypatch):
    """The health monitor reports uniformities -1, -3, -2 at the ends of epochs 1, 2, 3 (the real measurement, then
    its uniformity replaced): a run whose best epoch is not its last."""
    scores = iter([-1.0, -3.0, -2.0])
    real = HealthMonitor.measure

    def measure(self, model, warn):
        return {**real(self, model, warn), "uniformity": next(scores)}

    monkeypatch.setattr(HealthMonitor, "measure", measure)


def test_best_checkpoint_is_the_lowest_uniformity_and_run_at_best_loads_it(tiny_images, tmp_path, scripted_scores):
    run = tmp_path / "run"
    pretrain(load_config("v2-cifar10", [*TINY, f"data.path={tiny_images}", f"run.dir={run}"]), echo=lambda _m: None)
    records = epoch_records(run)
    assert [r["epoch"] for r in records if r.get("best")] == expected_bests(records) == [1, 2]
    best_epoch = min(records, key=lambda r: (r["uniformity"], r["epoch"]))["epoch"]
    assert best_epoch == 2
    best = load_checkpoint(run / "checkpoints" / "best.pt")
    assert best["epoch"] == best_epoch and best["step"] == 4 * best_epoch
    assert best["best"] == {"epoch": best_epoch, "uniformity": min(r["uniformity"] for r in records)}
    loaded = load_pretrained(f"{run}@best")
    assert loaded.checkpoint.name == "best.pt" and loaded.step == 4 * best_epoch
    assert f"epoch {best_epoch}, uniformity -3.000" in (run / "report.html").read_text()


def test_the_best_survives_a_resume(tiny_images, tmp_path, scripted_scores):
    run = tmp_path / "run"
    overrides = [*TINY, f"data.path={tiny_images}", f"run.dir={run}"]
    pretrain(load_config("v2-cifar10", [*overrides, "train.stop_at_step=9"]), echo=lambda _m: None)
    pretrain(load_config("v2-cifar10", overrides), echo=lambda _m: None)
    records = epoch_records(run)
    assert [r["epoch"] for r in records] == [1, 2, 3]
    best = load_checkpoint(run / "checkpoints" / "best.pt")
    assert best["epoch"] == 2 and best["step"] == 8  # epoch 3's -2 does not beat the resumed best, -3
    assert [r["epoch"] for r in records if r.get("best")] == expected_bests(records) == [1, 2]


def test_run_at_best_without_a_best_checkpoint_says_why(tiny_images, tmp_path):
    run = tmp_path / "run"
    pretrain(load_config("v2-cifar10", [*TINY, "train.epochs=1", "monitor.health_images=0",
                                        f"data.path={tiny_images}", f"run.dir={run}"]), echo=lambda _m: None)
    with pytest.raises(CheckpointError, match="monitor.health_images=0"):
        load_pretrained(f"{run}@best")
    with pytest.raises(CheckpointError, match="is not a run folder"):
        load_pretrained(f"{tmp_path / 'nope'}@best")
