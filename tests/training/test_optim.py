import pytest
import torch
from torch import nn

from mocokit.training.config import OptimConfig
from mocokit.training.optim import LARS, build_optimizer, parameter_groups, scaled_learning_rate


def slow_lars_step(params, grads, mus, lr, wd, momentum, trust):
    """The reference update, one tensor at a time in float64."""
    out = []
    for p, g, mu in zip(params, grads, mus):
        dp = g.clone()
        if p.ndim > 1:
            dp = dp + wd * p
            p_norm, d_norm = p.norm().item(), dp.norm().item()
            dp = dp * (trust * p_norm / d_norm if p_norm > 0 and d_norm > 0 else 1.0)
        mu = momentum * mu + dp
        out.append((p - lr * mu, mu))
    return out


def test_lars_equals_the_reference_update_over_several_steps():
    torch.manual_seed(0)
    params = [nn.Parameter(torch.randn(4, 3, dtype=torch.float64)), nn.Parameter(torch.randn(3, dtype=torch.float64)),
              nn.Parameter(torch.zeros(2, 2, dtype=torch.float64))]  # a zero tensor: trust ratio falls back to 1
    optimiser = LARS(params, lr=0.5, weight_decay=1e-2, momentum=0.9, trust_coefficient=0.001)
    ref = [p.detach().clone() for p in params]
    mus = [torch.zeros_like(p) for p in ref]
    for _ in range(3):
        grads = [torch.randn_like(p) for p in ref]
        for p, g in zip(params, grads):
            p.grad = g.clone()
        optimiser.step()
        stepped = slow_lars_step(ref, grads, mus, 0.5, 1e-2, 0.9, 0.001)
        ref, mus = [s[0] for s in stepped], [s[1] for s in stepped]
        for p, r in zip(params, ref):
            torch.testing.assert_close(p.detach(), r)


def test_lars_gives_1d_parameters_neither_decay_nor_trust_scaling():
    bias = nn.Parameter(torch.ones(3))
    optimiser = LARS([bias], lr=1.0, weight_decay=0.5, momentum=0.0)
    bias.grad = torch.full((3,), 0.1)
    optimiser.step()
    torch.testing.assert_close(bias.detach(), torch.full((3,), 0.9))


def test_linear_scaling_rule():
    assert scaled_learning_rate(OptimConfig(lr=0.03), 512) == pytest.approx(0.06)
    assert scaled_learning_rate(OptimConfig(lr=1.5e-4), 4096) == pytest.approx(2.4e-3)
    assert scaled_learning_rate(OptimConfig(lr=0.03, scale_lr=False), 512) == 0.03


def test_groups_exclude_bias_and_norm_from_decay_and_frozen_parameters_entirely():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    model[2].weight.requires_grad_(False)
    groups = parameter_groups(model, 0.1, no_decay_bias_and_norm=True)
    assert [len(g["params"]) for g in groups] == [1, 4] and [g["weight_decay"] for g in groups] == [0.1, 0.0]
    assert sum(len(g["params"]) for g in parameter_groups(model, 0.1, False)) == 5


@pytest.mark.parametrize("name,cls", [("sgd", torch.optim.SGD), ("lars", LARS), ("adamw", torch.optim.AdamW)])
def test_build_optimizer(name, cls):
    optimiser = build_optimizer(nn.Linear(2, 2), OptimConfig(name=name, betas=(0.9, 0.95)), lr=0.2)
    assert isinstance(optimiser, cls) and optimiser.param_groups[0]["lr"] == 0.2
    if name == "adamw":
        assert optimiser.param_groups[0]["betas"] == (0.9, 0.95)
