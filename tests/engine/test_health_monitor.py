"""The label-free health monitor: a synthetic collapse warns, measurements are repeatable and leave the RNG alone,
and a tiny pretraining run writes the metrics into its epoch records without changing what it trains."""

import json
from collections import OrderedDict
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from mocokit.engine.health_monitor import COLLAPSE_FACTOR, HealthMonitor, collapse_warning
from mocokit.engine.pretrain import pretrain
from mocokit.training.checkpoint import load_checkpoint
from mocokit.training.run_config import load_config

KEYS = ("rank", "alignment", "uniformity", "dimension_std")
TINY = [  # test_pretrain.py's tiny run: 72 generated images, 4 steps per epoch
    "model.width=0.125", "model.queue_size=32", "model.bn_splits=2", "train.batch_size=16", "train.epochs=2",
    "train.deterministic=true", "data.num_workers=0", "run.log_every_steps=2", "run.tensorboard=false",
    "run.progress=false", "train.threads=1",
]


def tiny_config(images, run_dir, *extra):
    return load_config("v2-cifar10", [*TINY, f"data.path={images}", f"run.dir={run_dir}", *extra])


def final_weights(run_dir):
    return load_checkpoint(run_dir / "checkpoints" / "last.pt")["model"]


class RandomViews(Dataset):
    """Items (views, label, index) as a per-image pretraining dataset gives them: two noisy views of an image."""

    def __init__(self, size: int = 96) -> None:
        self.images = torch.randn(size, 3, 8, 8, generator=torch.Generator().manual_seed(0))

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        image = self.images[i]
        return (image + 0.1 * torch.randn_like(image), image + 0.1 * torch.randn_like(image)), -1, i


def toy_model(constant: bool = False) -> SimpleNamespace:
    """An object with a MoCo's `encoder` (backbone + head); `constant`: the backbone gives every image the same
    features (a collapsed encoder: all weights zero, the bias alone)."""
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 32))
    if constant:
        nn.init.zeros_(backbone[1].weight)
    head = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 16))
    return SimpleNamespace(encoder=nn.Sequential(OrderedDict(backbone=backbone, head=head)))


def test_a_synthetic_collapse_gives_one_warning_line_naming_the_likely_causes():
    monitor = HealthMonitor(RandomViews(), size=64, seed=0, device=torch.device("cpu"), batch_size=32)
    warnings: list[str] = []
    healthy = monitor.measure(toy_model(), warn=warnings.append)
    assert warnings == []  # a first measurement has nothing to compare with
    assert monitor.size == 64 and set(KEYS) <= set(healthy) and healthy["health_seconds"] >= 0
    assert healthy["rank"] > 10 and healthy["dimension_std"] > 0.05
    collapsed = monitor.measure(toy_model(constant=True), warn=warnings.append)
    assert collapsed["rank"] < 1.01 and collapsed["dimension_std"] < 1e-4
    assert collapsed["alignment"] < 1e-6 and collapsed["uniformity"] > -1e-6  # both views on one point
    assert len(warnings) == 1 and "\n" not in warnings[0]
    for cause in ("optim.lr", "shuffle_bn", "bn_splits", "queue_size", "momentum"):
        assert cause in warnings[0]
    assert "effective rank" in warnings[0] and "per-dimension std" in warnings[0]


def test_the_warning_needs_a_sharp_fall_against_the_previous_measurement():
    before = {"rank": 20.0, "dimension_std": 0.2}
    assert collapse_warning(None, before) is None
    assert collapse_warning(before, {"rank": 20.0 * COLLAPSE_FACTOR * 1.01, "dimension_std": 0.2}) is None
    assert collapse_warning(before, {"rank": 25.0, "dimension_std": 0.3}) is None
    assert "per-dimension std 0.2 -> 0.05" in collapse_warning(before, {"rank": 20.0, "dimension_std": 0.05})
    assert "effective rank 20 -> 3" in collapse_warning(before, {"rank": 3.0, "dimension_std": 0.2})


def test_measurements_are_repeatable_and_leave_the_model_and_the_global_rng_alone():
    monitor = HealthMonitor(RandomViews(), size=48, seed=3, device=torch.device("cpu"), batch_size=16)
    model = toy_model()
    model.encoder.train()
    weights = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    rng = torch.get_rng_state()
    first, second = monitor.measure(model), monitor.measure(model)
    assert all(first[k] == second[k] for k in KEYS)  # the same images and views each time
    assert torch.equal(torch.get_rng_state(), rng)
    assert model.encoder.training
    assert all(torch.equal(v, weights[k]) for k, v in model.encoder.state_dict().items())


@pytest.mark.parametrize("augment", ["per_image", "batched"])
def test_a_run_logs_the_health_metrics_per_epoch_and_trains_the_same_weights(tiny_images, tmp_path, augment):
    extra = [f"data.augment={augment}", "monitor.knn_every_epochs=0", "monitor.health_images=40"]
    messages: list[str] = []
    pretrain(tiny_config(tiny_images, tmp_path / "on", *extra), echo=messages.append)
    records = [json.loads(line) for line in (tmp_path / "on" / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert len(epochs) == 2
    for record in epochs:
        assert all(isinstance(record[k], float) for k in (*KEYS, "health_seconds"))
        assert 1 <= record["rank"] <= 40 and record["uniformity"] <= 0 and 0 <= record["alignment"] <= 4
    assert any(m.startswith("health monitor: 40 training images") for m in messages)
    assert (tmp_path / "on" / "plots" / "health.png").is_file()

    pretrain(tiny_config(tiny_images, tmp_path / "off", *extra, "monitor.health_images=0"), echo=lambda _m: None)
    off = [json.loads(line) for line in (tmp_path / "off" / "metrics.jsonl").read_text().splitlines()]
    assert not any("rank" in r for r in off)
    on_weights, off_weights = final_weights(tmp_path / "on"), final_weights(tmp_path / "off")
    assert all(torch.equal(on_weights[k], off_weights[k]) for k in on_weights)  # measuring changes nothing


@pytest.mark.parametrize("override", ["monitor.health_images=-1", "monitor.health_every_epochs=0"])
def test_bad_health_settings_are_refused(override):
    with pytest.raises(Exception, match=override.split("=")[0]):
        load_config("v2-cifar10", [override])


@pytest.mark.parametrize("images,expected", [(100, 64), (1000, 200), (5000, 512), (40, 40)])
def test_the_sample_is_at_most_a_fifth_of_the_dataset_and_at_most_health_images(images, expected):
    from mocokit.engine.health_monitor import build_health_monitor

    cfg = load_config("v2-cifar10", [])  # monitor.health_images=512
    monitor = build_health_monitor(cfg, RandomViews(images), torch.device("cpu"), None, None, say=lambda _m: None)
    assert monitor.size == expected
    assert build_health_monitor(load_config("v2-cifar10", ["monitor.health_images=0"]), RandomViews(images),
                                torch.device("cpu"), None, None, say=lambda _m: None) is None
