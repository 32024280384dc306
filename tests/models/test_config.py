"""model.image_size follows data.image_size unless set (issue 17, item 12): the resolved config shows one side, a ViT
is built for the crops it is fed, and checkpoints written when the key defaulted to 224 still resume."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from mocokit import build_model
from mocokit.cli import main
from mocokit.engine.pretrain import check_same_model, pretrain
from mocokit.errors import ConfigError
from mocokit.models import ModelConfig
from mocokit.training.checkpoint import load_checkpoint, save_checkpoint
from mocokit.training.run_config import config_to_yaml, load_config

TINY_VIT = ["model.image_size=null", "model.patch_size=8", "model.backbone_args={depth: 1}", "model.hidden_dim=32",
            "model.dim=16"]


def test_the_resolved_demo_config_shows_one_image_side(capsys):
    assert main(["config", "demo"]) == 0
    tree = yaml.safe_load(capsys.readouterr().out)
    assert tree["model"]["image_size"] == tree["data"]["image_size"] == 32


@pytest.mark.parametrize("side", [16, 24])
def test_a_vit_without_model_image_size_is_built_for_the_data_crops(side):
    cfg = load_config("v3-vit-cifar10", [*TINY_VIT, f"data.image_size={side}"])
    assert cfg.model.image_size == side
    backbone = build_model(cfg).backbone
    assert tuple(backbone.patch_embed.grid_size) == (side // 8, side // 8)
    assert backbone(torch.randn(2, 3, side, side)).shape == (2, backbone.num_features)


def test_a_set_model_image_size_is_kept_and_the_resolved_config_round_trips():
    cfg = load_config("v3-vit-cifar10", ["model.image_size=64", "model.patch_size=8", "data.image_size=64"])
    assert (cfg.model.image_size, cfg.data.image_size) == (64, 64)
    again = load_config("demo", ["data.image_size=48"])
    assert again.model.image_size == 48
    # config.yaml of a run holds the side used: loading it gives the same config, whatever data.image_size does later
    assert yaml.safe_load(config_to_yaml(again))["model"]["image_size"] == 48


def test_a_data_side_that_is_no_multiple_of_the_patch_is_refused_naming_data_image_size():
    with pytest.raises(ConfigError, match=r"data.image_size \(30\).*multiple of model.patch_size \(8\)"):
        load_config("v3-vit-cifar10", [*TINY_VIT, "data.image_size=30"])


@pytest.mark.parametrize("overrides", [
    ["model.image_size=64"],  # a ViT preset (model.image_size: 32) set to another side than its crops
    ["data.image_size=64"],  # the crops changed, the preset's model.image_size left at 32
])
def test_a_vit_set_to_another_side_than_its_crops_is_refused_at_load_naming_both_keys(overrides):
    model, data = (64, 32) if overrides[0].startswith("model.") else (32, 64)
    with pytest.raises(ConfigError, match=rf"model.image_size \({model}\) differs from data.image_size \({data}\).*"
                                          r"model.image_size=null.*dynamic_img_size") as refused:
        load_config("v3-vit-cifar10", [*TINY_VIT[1:], *overrides])
    assert "\n" not in str(refused.value)


def test_a_side_mismatch_is_kept_where_it_runs_a_resnet_or_a_vit_with_dynamic_img_size():
    assert load_config("demo", ["model.image_size=224"]).model.image_size == 224  # a ResNet ignores it
    cfg = load_config("v3-vit-cifar10", [*TINY_VIT[1:], "model.image_size=16",
                                         "model.backbone_args={depth: 1, dynamic_img_size: true}"])
    assert (cfg.model.image_size, cfg.data.image_size) == (16, 32)
    backbone = build_model(cfg).backbone  # position embedding of a 2×2 grid, interpolated for the 4×4 of 32 px crops
    assert backbone(torch.randn(2, 3, 32, 32)).shape == (2, backbone.num_features)


def test_a_vit_model_config_alone_needs_its_side():
    with pytest.raises(ConfigError, match="model.image_size is null"):
        build_model(ModelConfig(version="v3", backbone="vit_tiny", backbone_args={"depth": 1}, patch_size=8))


def _saved(model_tree):
    return SimpleNamespace(config={"model": model_tree})


def test_the_vit_side_matters_to_a_resume_only_for_a_vit():
    resnet = load_config("demo")
    old = yaml.safe_load(config_to_yaml(resnet))["model"] | {"image_size": 224}
    check_same_model(_saved(old), resnet, "last.pt")  # a ResNet is the same network at any image_size
    vit = load_config("v3-vit-cifar10", TINY_VIT)
    saved = yaml.safe_load(config_to_yaml(vit))["model"]
    check_same_model(_saved(saved), vit, "last.pt")
    with pytest.raises(ConfigError, match="model.image_size: 224 in the checkpoint, 32 now"):
        check_same_model(_saved(saved | {"image_size": 224}), vit, "last.pt")


def test_a_checkpoint_written_when_model_image_size_defaulted_to_224_resumes(tmp_path):
    rng = np.random.default_rng(0)
    for c in range(2):
        folder = tmp_path / "images" / "train" / f"c{c}"
        folder.mkdir(parents=True)
        for n in range(16):
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{n}.png")
    run = tmp_path / "run"
    overrides = ["model.width=0.125", "model.queue_size=16", "model.bn_splits=2", "train.batch_size=8",
                 "train.epochs=1", "data.num_workers=0", "run.tensorboard=false", "run.progress=false",
                 "monitor.knn_every_epochs=0", "monitor.health_images=0", "train.threads=1",
                 f"data.path={tmp_path / 'images'}", f"run.dir={run}"]
    pretrain(load_config("v2-cifar10", [*overrides, "train.stop_at_step=2"]), echo=lambda _m: None)
    last = run / "checkpoints" / "last.pt"
    payload = load_checkpoint(last)
    payload["config"]["model"]["image_size"] = 224  # what every run wrote before the key followed data.image_size
    save_checkpoint(last, payload)
    said = []
    pretrain(load_config("v2-cifar10", overrides), echo=said.append)
    assert load_checkpoint(last)["step"] == 4  # resumed at step 2, finished the epoch (32 images / 8)
    assert any("resum" in line for line in said)
