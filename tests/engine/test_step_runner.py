"""StepRunner's fast path: torch.compile of each network (or of the whole step) with no graph break and nothing that a
new momentum recompiles, the dictionary written by end_step after the optimiser step (nothing left staged), and the
same numbers as the eager step."""

import copy
from contextlib import nullcontext

import pytest
import torch
import torch._dynamo
from torch import nn

from mocokit import load_config
from mocokit.engine.step import StepRunner
from mocokit.errors import ConfigError
from mocokit.models import ModelConfig, build_model
from mocokit.models.heads import v2_head
from mocokit.models.moco import MoCo
from mocokit.models.queue import Queue
from mocokit.models.shuffle_bn import split_batch_norms

SMALL_RESNET = {"backbone": "resnet18", "width": 0.125, "cifar_stem": True}
SMALL_VIT = {"backbone": "vit_tiny", "image_size": 16, "patch_size": 8, "backbone_args": {"depth": 1}}
TINY = {
    # v1: linear head, queue, shuffle BN over split BatchNorm
    "v1": (ModelConfig(version="v1", queue_size=48, bn_splits=2, **SMALL_RESNET), 16),
    # v2 with the queue, the symmetric loss and shuffle BN over split BatchNorm (one backbone call per view)
    "v2-symmetric": (ModelConfig(version="v2", queue_size=48, symmetric=True, bn_splits=2, **SMALL_RESNET), 16),
    # the MoCo paper's other dictionaries, same encoder and loss
    "v2-end-to-end": (ModelConfig(version="v2", dictionary="end_to_end", bn_splits=2, **SMALL_RESNET), 16),
    "v2-memory-bank": (ModelConfig(version="v2", dictionary="memory_bank", queue_size=16, bn_splits=2,
                                   **SMALL_RESNET), 16),
    # v3 with a ResNet: projector and predictor with BatchNorm, batch negatives, no queue
    "v3-resnet": (ModelConfig(version="v3", hidden_dim=32, dim=16, shuffle_bn=False, **SMALL_RESNET), 16),
    # v3 with a ViT: both views in one backbone call, a scheduled momentum
    "v3-vit": (ModelConfig(version="v3", hidden_dim=32, dim=16, freeze_patch_embed=True, shuffle_bn=False,
                           **SMALL_VIT), 16),
    # any timm model as the backbone
    "v2-timm": (ModelConfig(version="v2", queue_size=48, backbone="timm:convnext_atto", hidden_dim=32), 32),
}


@pytest.fixture
def graphs(monkeypatch):
    """torch.compile with a backend that records each graph dynamo hands it and runs it as it is (no inductor)."""
    recorded = []
    real_compile = torch.compile

    def backend(graph_module, example_inputs):
        recorded.append(graph_module)
        return graph_module.forward

    monkeypatch.setattr(torch, "compile", lambda model, **kwargs: real_compile(model, **{**kwargs, "backend": backend}))
    torch._dynamo.reset()
    yield recorded
    torch._dynamo.reset()


def runner(model, compile, **kwargs):
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1, momentum=0.9)
    return StepRunner(model, optimizer, torch.device("cpu"), nullcontext, compile=compile, **kwargs)


@pytest.mark.parametrize("name", TINY)
def test_the_compiled_step_is_one_graph_for_every_momentum_and_matches_the_eager_step(name, graphs):
    cfg, size = TINY[name]
    eager_model = build_model(cfg, dataset_size=32).train()
    compiled_model = copy.deepcopy(eager_model)
    compile_times = []
    eager = runner(eager_model, compile=False)
    compiled = runner(compiled_model, compile=True, compile_scope="step", on_compiled=compile_times.append)
    for step, m in enumerate([0.9, 0.93]):  # a new m every step, as v3's schedule; the queue written in between
        batch = (torch.randn(8, 3, size, size), torch.randn(8, 3, size, size))
        extra = {"indices": torch.arange(8) + 8 * step} if eager.needs_indices else {}  # the memory bank's rows
        torch.manual_seed(step)  # shuffle BN and the memory bank draw from the global generator
        expected = eager(batch, lr=0.1, momentum=m, **extra)
        torch.manual_seed(step)
        out = compiled(batch, lr=0.1, momentum=m, **extra)
        torch.testing.assert_close(out.loss, expected.loss)
        assert getattr(compiled_model.dictionary, "_pending", []) == []  # end_step wrote what the step staged
    assert len(graphs) == 1  # no graph break, and no recompilation for a new m or after the first dictionary write
    assert len(compile_times) == 1 and compile_times[0] > 0
    for (key, a), b in zip(eager_model.state_dict().items(), compiled_model.state_dict().values()):
        torch.testing.assert_close(a, b, msg=key)


def two_steps(run, model, size, momenta=(0.9, 0.93), start=0, lr=0.1):
    """Steps `start`, `start` + 1, ... with fixed views and seeds per step number; their losses."""
    losses = []
    for step, m in enumerate(momenta, start):
        batch = (torch.randn(8, 3, size, size, generator=torch.Generator().manual_seed(2 * step)),
                 torch.randn(8, 3, size, size, generator=torch.Generator().manual_seed(2 * step + 1)))
        extra = {"indices": torch.arange(8) + 8 * step} if run.needs_indices else {}
        torch.manual_seed(step)  # shuffle BN and the memory bank draw from the global generator
        losses.append(run(batch, lr=lr, momentum=m, **extra).loss)
        assert getattr(model.dictionary, "_pending", []) == []
    return losses


@pytest.mark.parametrize("name", ["v2-symmetric", "v2-memory-bank", "v3-resnet", "v3-vit"])
def test_compiling_the_networks_traces_each_once_without_breaks_and_matches_the_eager_step(name, graphs):
    """train.compile_scope=networks (the default): backbones, heads and predictor compiled on their own. The first
    step traces each network once per grad mode (query side with gradients, key side without); the second step, with
    a new m and the dictionary written, traces nothing more; outside the step the networks run eagerly (the kNN
    monitor's calls compile nothing)."""
    from torch._dynamo.utils import counters

    cfg, size = TINY[name]
    eager_model = build_model(cfg, dataset_size=32).train()
    compiled_model = copy.deepcopy(eager_model)
    compile_times = []
    eager = runner(eager_model, compile=False)
    compiled = runner(compiled_model, compile=True, on_compiled=compile_times.append)
    counters.clear()
    expected = two_steps(eager, eager_model, size)
    first = two_steps(compiled, compiled_model, size, momenta=(0.9,))
    traced_first = len(graphs)
    second = two_steps(compiled, compiled_model, size, momenta=(0.93,), start=1)
    assert sum(counters["graph_break"].values()) == 0
    assert len(graphs) == traced_first  # nothing recompiled for the second step
    networks = compiled_model.networks()
    key_side = 2 if compiled_model.momentum_encoder is not None else 0
    # each network traced once (the key encoder's in no-grad mode), the backbone per view batch shape at most once
    assert len(networks) - key_side <= traced_first <= len(networks)
    torch.testing.assert_close(torch.stack(first + second), torch.stack(expected))
    for (key, a), b in zip(eager_model.state_dict().items(), compiled_model.state_dict().values()):
        torch.testing.assert_close(a, b, msg=key)
    assert len(compile_times) == 1
    assert all(n._compiled_call_impl is None for n in networks)  # eager outside the step
    with torch.no_grad():
        compiled_model.eval().backbone(torch.randn(3, 3, size, size))
    assert len(graphs) == traced_first


def test_set_compiled_false_goes_back_to_the_eager_step(graphs):
    cfg, size = TINY["v2-symmetric"]
    model = build_model(cfg).train()
    run = runner(model, compile=True)
    two_steps(run, model, size, momenta=(0.9,))
    traced = len(graphs)
    assert traced > 0 and run.compiled
    run.set_compiled(False)
    two_steps(run, model, size, momenta=(0.93,), start=1)
    assert len(graphs) == traced and not run.compiled


def small_split_bn_moco() -> MoCo:
    """A v2 MoCo (symmetric loss, queue, shuffle BN over 2 BatchNorm groups) around a two-convolution backbone:
    every kind of layer of the ResNets' step, in a graph Inductor compiles in seconds."""
    backbone = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                             nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten())
    backbone.num_features = 16
    split_batch_norms(backbone, 2)
    return MoCo(backbone, v2_head(16, 16, 32), None, Queue(48, 16), temperature=0.2, momentum=0.99,
                symmetric=True, shuffle_bn=True)


def test_inductor_compiled_networks_match_the_eager_step_within_float32_tolerance():
    """The real compiler (Inductor, on this CPU) with 2 BatchNorm groups: the split BatchNorm's compiled form and
    Inductor's fused kernels reorder float32 sums, so the step agrees with the eager one to float32 rounding, not
    bit for bit. Stated tolerances: the losses of three steps to 1e-4 relative; every weight's change over the three
    steps to 1% of its size, at lr 0.01."""
    torch._dynamo.reset()
    eager_model = small_split_bn_moco().train()
    initial = copy.deepcopy(eager_model.state_dict())
    compiled_model = copy.deepcopy(eager_model)
    eager, compiled = runner(eager_model, compile=False), runner(compiled_model, compile=True)
    expected = two_steps(eager, eager_model, 16, momenta=(0.9, 0.93, 0.95), lr=0.01)
    got = two_steps(compiled, compiled_model, 16, momenta=(0.9, 0.93, 0.95), lr=0.01)
    torch.testing.assert_close(torch.stack(got), torch.stack(expected), rtol=1e-4, atol=0)
    for (key, a), b in zip(eager_model.state_dict().items(), compiled_model.state_dict().values()):
        if a.is_floating_point():
            change = (a - initial[key]).abs().max()
            assert (a - b).abs().max() <= 0.01 * change + 1e-6, key
    torch._dynamo.reset()


def test_train_compile_values_and_scopes_are_checked():
    cfg = load_config("demo")
    assert cfg.train.compile == "auto" and cfg.train.compile_scope == "networks"
    assert load_config("demo", overrides=["train.compile=true"]).train.compile is True
    assert load_config("demo", overrides=["train.compile_scope=step"]).train.compile_scope == "step"
    with pytest.raises(ConfigError, match="train.compile"):
        load_config("demo", overrides=["train.compile=sometimes"])
    with pytest.raises(ConfigError, match="train.compile_scope"):
        load_config("demo", overrides=["train.compile_scope=everything"])
