"""The presets for CIFAR-100, STL-10 and ImageNet-100 (issue 18, item 5): their data and the values they change,
and one training step of each model (a ResNet at width 0.25: the step, not the size, is what is tested)."""

import pytest
import torch

from mocokit import build_model, load_config
from mocokit.config.loader import preset_names

# preset -> (data.path, data.image_size, data.recipe, model.version, model.cifar_stem, model.queue_size)
EXPECTED = {
    "v2-cifar100": ("cifar100", 32, "v2-small", "v2", True, 4096),
    "v3-cifar100": ("cifar100", 32, "v3-small", "v3", True, 0),
    "v2-stl10": ("stl10", 96, "v2-96", "v2", False, 4096),
    "v2-imagenet100": ("", 224, "v2", "v2", False, 16384),
    "v3-imagenet100": ("", 224, "v3-r50", "v3", False, 0),
}


@pytest.mark.parametrize("preset", list(EXPECTED))
def test_each_preset_has_its_data_and_trains_one_step(preset):
    assert preset in preset_names()
    cfg = load_config(preset, ["model.width=0.25"])
    assert (cfg.data.path, cfg.data.image_size, cfg.data.recipe, cfg.model.version, cfg.model.cifar_stem,
            cfg.model.queue_size) == EXPECTED[preset]
    size = min(cfg.data.image_size, 64)
    model = build_model(cfg).train()
    params = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in params]
    out = model(torch.randn(16, 3, size, size), torch.randn(16, 3, size, size))
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    torch.optim.SGD(params, lr=0.01).step()
    assert any(not torch.equal(a, b) for a, b in zip(before, params))


def test_the_imagenet100_presets_keep_their_base_recipes_except_what_they_say():
    v2, base = load_config("v2-imagenet100"), load_config("v2-imagenet")
    assert (v2.model.temperature, v2.optim.lr, v2.train.batch_size) == (base.model.temperature, base.optim.lr, 256)
    v3, base = load_config("v3-imagenet100"), load_config("v3-resnet50-imagenet")
    assert (v3.train.batch_size, v3.train.epochs, v3.optim.lr, v3.model.temperature) == (1024, 200, base.optim.lr, 1.0)
    stl = load_config("v2-stl10")
    assert (stl.train.batch_size, stl.optim.lr, stl.model.temperature) == (256, 0.03, 0.1)
