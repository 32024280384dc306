import math

import pytest
import torch
from torch import nn

from mocokit.models.momentum import cosine_momentum, make_momentum_copy, momentum_update_


def two_nets():
    online = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 3))
    target = make_momentum_copy(online)
    with torch.no_grad():
        for p in online.parameters():
            p.add_(torch.randn_like(p))  # make them differ
    return online, target


def test_copy_is_frozen_and_equal():
    online = nn.Linear(4, 3)
    target = make_momentum_copy(online)
    assert all(not p.requires_grad for p in target.parameters())
    assert all(torch.equal(a, b) for a, b in zip(online.parameters(), target.parameters()))
    assert all(a.data_ptr() != b.data_ptr() for a, b in zip(online.parameters(), target.parameters()))


def test_momentum_zero_copies_the_weights():
    online, target = two_nets()
    momentum_update_(target, online, 0.0)
    assert all(torch.equal(a, b) for a, b in zip(online.parameters(), target.parameters()))


def test_momentum_one_keeps_the_weights():
    online, target = two_nets()
    before = [p.clone() for p in target.parameters()]
    momentum_update_(target, online, 1.0)
    assert all(torch.equal(a, b) for a, b in zip(before, target.parameters()))


def test_ema_equals_per_parameter_loop():
    online, target = two_nets()
    expected = [0.9 * t + 0.1 * o for t, o in zip(target.parameters(), online.parameters())]
    momentum_update_(target, online, 0.9)
    for e, t in zip(expected, target.parameters()):
        torch.testing.assert_close(t, e)


def test_buffers_are_not_averaged():
    online, target = two_nets()
    online[1].running_mean.fill_(5.0)
    momentum_update_(target, online, 0.0)
    assert torch.equal(target[1].running_mean, torch.zeros(8))


def test_cosine_schedule_starts_at_m0_ends_at_one_and_rises():
    assert cosine_momentum(0.0, 0.99) == pytest.approx(0.99)
    assert cosine_momentum(1.0, 0.99) == pytest.approx(1.0)
    assert cosine_momentum(0.5, 0.99) == pytest.approx(0.995)
    values = [cosine_momentum(e / 100, 0.99) for e in range(101)]
    assert all(a <= b for a, b in zip(values, values[1:]))
    # the formula of the paper at an arbitrary point
    assert cosine_momentum(0.3, 0.996) == pytest.approx(1 - 0.5 * (1 + math.cos(math.pi * 0.3)) * 0.004)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_tensor_momentum_gives_the_float_update_and_is_exact_at_zero_and_one(dtype):
    online, target = two_nets()
    start = [p.clone() for p in target.parameters()]
    expected = [0.9 * t + 0.1 * o for t, o in zip(start, online.parameters())]
    momentum_update_(target, online, torch.tensor(0.9, dtype=dtype))
    for e, t in zip(expected, target.parameters()):
        torch.testing.assert_close(t, e)
    before = [p.clone() for p in target.parameters()]
    momentum_update_(target, online, torch.tensor(1.0, dtype=dtype))
    assert all(torch.equal(b, t) for b, t in zip(before, target.parameters()))
    momentum_update_(target, online, torch.tensor(0.0, dtype=dtype))
    assert all(torch.equal(a, b) for a, b in zip(online.parameters(), target.parameters()))
