"""Official-layout files -> `mocokit import` -> the same features, heads and queue as the foreign model; then export
torchvision -> strict load. Wrong shapes and extra keys are errors naming the key and the file."""

from __future__ import annotations

import copy

import pytest
import timm
import torch
import torchvision
from safetensors.torch import load_file
from torch import nn

from mocokit.cli import main
from mocokit.evaluation.pretrained import load_pretrained
from mocokit.export import export_model
from mocokit.export.importer import import_weights
from mocokit.weights import WeightsError, read_weights

from .foreign import OfficialV1V2, OfficialV3, save_official, small_timm_vit, trained_looking, v1v2_encoder

IMAGES = torch.randn(2, 3, 64, 64)


def _features(resnet: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A torchvision ResNet's pooled features: the model with its fc set aside."""
    trunk = copy.deepcopy(resnet)
    trunk.fc = nn.Identity()
    return trunk.eval()(x)


@torch.no_grad()
def test_official_v2_resnet50_gives_the_same_features_heads_and_queue_and_exports_to_torchvision(tmp_path):
    official = OfficialV1V2(lambda: v1v2_encoder(torchvision.models.resnet50(num_classes=128), mlp=True), 128, 256)
    path = save_official(tmp_path / "moco_v2_800ep_pretrain.pth.tar", official, "resnet50")

    result = import_weights(path, tmp_path / "run")
    cfg = result.config.model
    assert (result.layout, cfg.version, cfg.backbone, cfg.width, cfg.cifar_stem) == ("moco-v1v2", "v2", "resnet50",
                                                                                      1.0, False)
    assert (cfg.dim, cfg.hidden_dim, cfg.queue_size) == (128, 2048, 256)
    assert any("'optimizer'" in note for note in result.report.notes)  # said, not silently dropped
    model = load_pretrained(tmp_path / "run", say=lambda _m: None).model  # as knn/linear/export read it
    for mine, theirs in ((model.encoder, official.encoder_q), (model.momentum_encoder, official.encoder_k)):
        features = _features(theirs, IMAGES)
        torch.testing.assert_close(mine.backbone(IMAGES), features, rtol=0, atol=0)
        torch.testing.assert_close(mine.head(features), theirs.fc(features), rtol=0, atol=0)
    assert torch.equal(model.queue.keys, official.queue.t())  # dim×K -> K×dim
    assert int(model.queue.ptr) == 128

    exported = export_model(model, result.config, "torchvision", tmp_path / "r50.safetensors")
    target = torchvision.models.resnet50()
    target.fc = nn.Identity()
    target.load_state_dict(load_file(exported.path), strict=True)
    torch.testing.assert_close(target.eval()(IMAGES), _features(official.encoder_q, IMAGES), rtol=0, atol=0)


@torch.no_grad()
def test_official_v1_through_the_command_line(tmp_path, capsys):
    official = OfficialV1V2(lambda: v1v2_encoder(torchvision.models.resnet18(num_classes=128), mlp=False), 128, 64)
    path = save_official(tmp_path / "moco_v1_200ep_pretrain.pth.tar", official, "resnet18")
    out = tmp_path / "v1.pt"
    assert main(["import", str(path), "--format", "moco-v1v2", "--out", str(out), "--json"]) == 0
    assert "moco-v1v2 layout" in capsys.readouterr().out
    pretrained = load_pretrained(out, say=lambda _m: None)
    assert (pretrained.config.model.version, pretrained.config.model.backbone) == ("v1", "resnet18")
    features = _features(official.encoder_q, IMAGES)
    torch.testing.assert_close(pretrained.model.backbone(IMAGES), features, rtol=0, atol=0)
    torch.testing.assert_close(pretrained.model.encoder.head(features), official.encoder_q.fc(features))
    assert main(["import", str(path), "--out", str(out)]) == 2  # exists: refused without --force


@torch.no_grad()
def test_official_v3_resnet_gives_the_same_features_projector_and_predictor(tmp_path):
    official = OfficialV3(lambda classes: torchvision.models.resnet18(num_classes=classes), vit=False, dim=32,
                          mlp_dim=64)
    path = save_official(tmp_path / "r-18-300ep.pth.tar", official, "resnet18",
                         extra={"scaler": {"scale": 65536.0, "_growth_tracker": 3}})
    result = import_weights(path, tmp_path / "run")
    cfg = result.config.model
    assert (result.layout, cfg.version, cfg.dim, cfg.hidden_dim, cfg.projector_layers, cfg.predictor_layers) == (
        "moco-v3", "v3", 32, 64, 2, 2)
    model = load_pretrained(tmp_path / "run", say=lambda _m: None).model
    for mine, theirs in ((model.encoder, official.base_encoder), (model.momentum_encoder, official.momentum_encoder)):
        theirs.eval()
        torch.testing.assert_close(mine(IMAGES), theirs(IMAGES), rtol=0, atol=0)  # backbone + projector
        torch.testing.assert_close(mine.backbone(IMAGES), _features(theirs, IMAGES), rtol=0, atol=0)
    z = official.base_encoder(IMAGES)
    torch.testing.assert_close(model.predictor(z), official.predictor.eval()(z), rtol=0, atol=0)


@torch.no_grad()
def test_official_v3_vit_gives_the_same_features_and_projector(tmp_path):
    official = OfficialV3(small_timm_vit, vit=True, dim=32, mlp_dim=64)
    path = save_official(tmp_path / "vit-s-300ep.pth.tar", official, "vit_small")
    result = import_weights(path, tmp_path / "vit.pt")
    cfg = result.config.model
    assert (cfg.version, cfg.backbone, cfg.backbone_args, cfg.image_size, cfg.patch_size, cfg.projector_layers) == (
        "v3", "vit_tiny", {"depth": 1}, 32, 8, 3)
    assert result.config.data.image_size == 32  # the evaluation commands feed it its own side, not the preset's 224
    model = load_pretrained(tmp_path / "vit.pt", say=lambda _m: None).model
    x = torch.randn(2, 3, 32, 32)
    vit = official.base_encoder.eval()
    features = vit.forward_head(vit.forward_features(x), pre_logits=True)  # the class token, before the head
    torch.testing.assert_close(model.backbone(x), features, rtol=0, atol=0)
    torch.testing.assert_close(model.encoder(x), vit(x), rtol=0, atol=0)
    exported = export_model(model, result.config, "timm", tmp_path / "vit.safetensors")
    assert exported.tensors == len([n for n in vit.state_dict() if not n.startswith("head.")])


@torch.no_grad()
def test_torchvision_and_timm_backbones_import_without_their_classifier(tmp_path):
    resnet = trained_looking(torchvision.models.resnet18())
    torch.save(resnet.state_dict(), tmp_path / "resnet18.pth")
    result = import_weights(tmp_path / "resnet18.pth", tmp_path / "tv.pt")
    assert result.layout == "torchvision" and result.config.model.backbone == "resnet18"
    assert any("'fc.weight'" in note for note in result.report.notes)
    assert any("momentum_encoder.backbone: a copy of encoder.backbone" in note for note in result.report.notes)
    model = load_pretrained(tmp_path / "tv.pt", say=lambda _m: None).model
    torch.testing.assert_close(model.backbone(IMAGES), _features(resnet, IMAGES), rtol=0, atol=0)
    torch.testing.assert_close(model.momentum_encoder.backbone(IMAGES), _features(resnet, IMAGES), rtol=0, atol=0)

    timm_resnet = trained_looking(timm.create_model("resnet18"))
    from safetensors.torch import save_file

    save_file(timm_resnet.state_dict(), tmp_path / "timm.safetensors")
    result = import_weights(tmp_path / "timm.safetensors", tmp_path / "timm.pt", fmt="timm")
    model = load_pretrained(tmp_path / "timm.pt", say=lambda _m: None).model
    timm_resnet.reset_classifier(0)
    torch.testing.assert_close(model.backbone(IMAGES), timm_resnet.eval()(IMAGES), rtol=0, atol=0)


@pytest.fixture(scope="module")
def v2_state(tmp_path_factory):
    official = OfficialV1V2(lambda: v1v2_encoder(torchvision.models.resnet18(num_classes=128), mlp=True), 128, 64)
    path = save_official(tmp_path_factory.mktemp("v2") / "v2.pth.tar", official, "resnet18")
    return torch.load(path, weights_only=True)


def _saved(tmp_path, checkpoint, name="edited.pth.tar"):
    torch.save(checkpoint, tmp_path / name)
    return tmp_path / name


def test_a_wrong_shape_names_the_key_and_the_file(tmp_path, v2_state):
    path = _saved(tmp_path, v2_state)
    with pytest.raises(WeightsError, match=r"edited\.pth\.tar: 'encoder_q\.fc\.0\.weight' \(as encoder\.head\.0"
                                           r"\.weight\) has shape \(512, 512\), the model's encoder\.head\.0\.weight "
                                           r"\(256, 512\)"):
        import_weights(path, tmp_path / "out.pt", config="v2-imagenet",
                       overrides=["model.backbone=resnet18", "model.hidden_dim=256", "model.queue_size=64"])
    assert not (tmp_path / "out.pt").exists()


def test_an_extra_key_names_the_key_and_the_file(tmp_path, v2_state):
    state = dict(v2_state["state_dict"])
    state["module.encoder_q.layer5.0.conv1.weight"] = torch.zeros(1)
    path = _saved(tmp_path, {**v2_state, "state_dict": state})
    with pytest.raises(WeightsError, match=r"edited\.pth\.tar: 'encoder_q\.layer5\.0\.conv1\.weight' \(as encoder"
                                           r"\.backbone\.layer5\.0\.conv1\.weight\) has no place"):
        import_weights(path, tmp_path / "out.pt")
    state = {**v2_state["state_dict"], "module.teacher.weight": torch.zeros(1)}
    path = _saved(tmp_path, {**v2_state, "state_dict": state})
    with pytest.raises(WeightsError, match=r"key 'teacher\.weight' has no place in a MoCo model"):
        import_weights(path, tmp_path / "out.pt")


def test_a_missing_tensor_of_a_part_is_named(tmp_path, v2_state):
    state = {k: v for k, v in v2_state["state_dict"].items() if k != "module.encoder_q.layer2.0.bn1.weight"}
    path = _saved(tmp_path, {**v2_state, "state_dict": state})
    with pytest.raises(WeightsError, match=r"not encoder\.backbone\.layer2\.0\.bn1\.weight"):
        import_weights(path, tmp_path / "out.pt")


def test_unknown_layouts_and_code_in_pickles_are_refused(tmp_path, v2_state):
    with pytest.raises(WeightsError, match="no known layout"):
        read_weights(_saved(tmp_path, {"w": torch.zeros(2)}))
    with pytest.raises(WeightsError, match="keys of the moco-v1v2 layout"):
        read_weights(_saved(tmp_path, v2_state), "moco-v3")
    with pytest.raises(WeightsError, match=r"weights_only=True"):
        read_weights(_saved(tmp_path, {"state_dict": v2_state["state_dict"], "args": torch.nn.ReLU()}))
