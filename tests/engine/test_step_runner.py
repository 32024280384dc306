"""StepRunner's fast path: torch.compile as one graph that no new momentum recompiles, the dictionary written by
end_step after the optimiser step (nothing left staged), and the same numbers as the eager step."""

import copy
from contextlib import nullcontext

import pytest
import torch
import torch._dynamo

from mocokit import load_config
from mocokit.engine.step import StepRunner, compile_enabled
from mocokit.errors import ConfigError
from mocokit.models import ModelConfig, build_model

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

    monkeypatch.setattr(torch, "compile", lambda model, **kwargs: real_compile(model, backend=backend, **kwargs))
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
    compiled = runner(compiled_model, compile=True, on_compiled=compile_times.append)
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


def test_train_compile_auto_compiles_on_cuda_only_and_other_values_are_refused():
    cfg = load_config("demo")
    assert cfg.train.compile == "auto"
    assert compile_enabled("auto", torch.device("cuda", 0)) and not compile_enabled("auto", torch.device("cpu"))
    assert compile_enabled(True, torch.device("cpu")) and not compile_enabled(False, torch.device("cuda", 0))
    assert load_config("demo", overrides=["train.compile=true"]).train.compile is True
    with pytest.raises(ConfigError, match="train.compile"):
        load_config("demo", overrides=["train.compile=sometimes"])
