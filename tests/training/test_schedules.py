import math

import pytest

from mocokit.models.config import ModelConfig
from mocokit.training.config import OptimConfig
from mocokit.training.schedules import learning_rate_at, momentum_at


def test_warmup_then_cosine_per_iteration():
    cfg = OptimConfig(warmup_epochs=10, schedule="cosine")
    lr = lambda step: learning_rate_at(step, steps_per_epoch=100, epochs=100, peak_lr=2.0, cfg=cfg)  # noqa: E731
    assert lr(0) == 0.0
    assert lr(500) == pytest.approx(1.0)  # half-way through the warm-up
    assert lr(1000) == pytest.approx(2.0)  # the peak
    assert lr(5500) == pytest.approx(2.0 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr(10000) == pytest.approx(0.0, abs=1e-12)
    values = [lr(s) for s in range(1000, 10001, 50)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_step_schedule_multiplies_at_milestones():
    cfg = OptimConfig(schedule="step", milestones=[120, 160], gamma=0.1)
    lr = lambda epoch: learning_rate_at(epoch * 10, 10, 200, 0.03, cfg)  # noqa: E731
    assert [lr(0), lr(119.9), lr(120), lr(159), lr(160), lr(199)] == pytest.approx(
        [0.03, 0.03, 0.003, 0.003, 0.0003, 0.0003])


def test_constant_schedule():
    assert learning_rate_at(123, 10, 20, 0.5, OptimConfig(schedule="constant")) == 0.5


def test_momentum_constant_for_v2_and_cosine_for_v3():
    assert momentum_at(500, 1000, ModelConfig(momentum=0.999)) == 0.999
    v3 = ModelConfig(version="v3", momentum=0.99, momentum_schedule="cosine")
    assert momentum_at(0, 1000, v3) == pytest.approx(0.99)
    assert momentum_at(1000, 1000, v3) == pytest.approx(1.0)
    assert momentum_at(500, 1000, v3) == pytest.approx(0.995)
