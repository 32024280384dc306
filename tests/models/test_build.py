import warnings

import pytest
import torch
from PIL import Image

from mocokit import build_model, load_config
from mocokit.config.loader import preset_names
from mocokit.models import ModelConfig
from mocokit.models.shuffle_bn import SplitBatchNorm2d

# Small inputs per preset family: ResNets at 64 px (groups of 2 for 8 BN splits), ViTs at 32 px with 16 px patches.
SMALL = {
    "imagenet": (["model.image_size=32", "data.image_size=32"], 16, 64),
    "cifar10": ([], 16, 32),
}


@pytest.mark.parametrize("preset", preset_names())
def test_every_preset_builds_and_trains_one_step(preset, tmp_path):
    overrides, batch, size = SMALL["cifar10" if "cifar" in preset or preset == "auto" else "imagenet"]
    if preset == "auto":  # derived from 32 px images: the CIFAR recipe's model
        for i in range(16):
            Image.new("RGB", (32, 32), (i, i, i)).save(tmp_path / f"{i}.png")
        overrides = [f"data.path={tmp_path}", "train.batch_size=16"]
    cfg = load_config(preset, overrides=overrides)
    if cfg.model.backbone.startswith("vit"):
        size = cfg.model.image_size
    model = build_model(cfg).train()
    params = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in params]
    out = model(torch.randn(batch, 3, size, size), torch.randn(batch, 3, size, size))
    assert out["loss"].ndim == 0 and torch.isfinite(out["loss"])
    out["loss"].backward()
    torch.optim.SGD(params, lr=0.01).step()
    assert any(not torch.equal(a, b) for a, b in zip(before, params))


def test_preset_values_follow_the_reference():
    v1, v2 = load_config("v1-imagenet").model, load_config("v2-imagenet").model
    assert (v1.temperature, v1.momentum, v1.queue_size, v1.dim) == (0.07, 0.999, 65536, 128)
    assert (v2.version, v2.temperature) == ("v2", 0.2)
    r50 = load_config("v3-resnet50-imagenet").model
    assert (r50.temperature, r50.momentum, r50.dim, r50.hidden_dim, r50.projector_layers) == (1.0, 0.99, 256, 4096, 2)
    vit = load_config("v3-vit-small-imagenet").model
    assert (vit.temperature, vit.projector_layers, vit.freeze_patch_embed) == (0.2, 3, True)
    cifar = load_config("v2-cifar10").model
    assert (cifar.queue_size, cifar.momentum, cifar.temperature, cifar.bn_splits) == (4096, 0.99, 0.1, 8)


def test_bn_splits_become_split_batch_norm_in_both_encoders():
    model = build_model(ModelConfig(version="v2", backbone="resnet18", width=0.125, bn_splits=4, queue_size=8))
    for encoder in (model.encoder, model.momentum_encoder):
        splits = [m.num_splits for m in encoder.modules() if isinstance(m, SplitBatchNorm2d)]
        assert splits and set(splits) == {4}


def test_one_device_shuffle_bn_without_splits_warns():
    with pytest.warns(UserWarning, match="shuffling changes nothing"):
        build_model(ModelConfig(version="v2", backbone="resnet18", width=0.125, bn_splits=1, queue_size=8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_model(ModelConfig(version="v2", backbone="resnet18", width=0.125, bn_splits=2, queue_size=8))
