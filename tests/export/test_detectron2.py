"""`--format detectron2`: the key set, shapes and values the official MoCo converter
(facebookresearch/moco detection/convert-pretrain-to-detectron2.py) gives for a ResNet-50, and the refusals."""

import pickle

import numpy as np
import pytest
import torch
import torchvision

from mocokit.export import ExportError, export_model
from mocokit.models import build_model
from mocokit.training.run_config import load_config

from .conftest import trained_looking


def official_name(key: str) -> str:
    """The official converter's rules, applied as it applies them (plain string replacements, in its order)."""
    if "layer" not in key:
        key = "stem." + key
    for t in [1, 2, 3, 4]:
        key = key.replace(f"layer{t}", f"res{t + 1}")
    for t in [1, 2, 3]:
        key = key.replace(f"bn{t}", f"conv{t}.norm")
    return key.replace("downsample.0", "shortcut").replace("downsample.1", "shortcut.norm")


def test_a_resnet50_has_exactly_the_official_converter_s_keys_shapes_and_the_run_s_values(tmp_path):
    cfg = load_config("v2-imagenet", ["model.queue_size=256"])
    model = trained_looking(build_model(cfg)).eval()
    result = export_model(model, cfg, "detectron2", tmp_path / "r50.pkl")
    with open(result.path, "rb") as handle:
        content = pickle.load(handle)
    assert set(content) == {"model", "__author__", "matching_heuristics"}
    assert content["matching_heuristics"] is True and content["__author__"] == "mocokit"

    reference = {k: v for k, v in torchvision.models.resnet50().state_dict().items() if not k.startswith("fc.")}
    expected = {official_name(k): tuple(v.shape) for k, v in reference.items()}
    assert len(expected) == len(reference) == 318  # ResNet-50: 53 convolutions, 53 BatchNorms of 5 tensors
    assert {k: v.shape for k, v in content["model"].items()} == expected
    assert "res5.2.conv3.norm.running_var" in expected and "stem.conv1.norm.weight" in expected
    assert "res2.0.shortcut.norm.bias" in expected
    backbone = model.backbone.state_dict()
    for key in reference:
        array = content["model"][official_name(key)]
        assert isinstance(array, np.ndarray)
        assert torch.equal(torch.from_numpy(array), backbone[key]), key
    assert result.tensors == 318 and result.bytes == result.path.stat().st_size
    assert "MODEL.RESNETS.DEPTH: 50" in result.load_code and "STRIDE_IN_1X1: False" in result.load_code


@pytest.mark.parametrize(("preset", "overrides", "why"), [
    ("v3-vit-cifar10", ["model.backbone_args={depth: 1}"], "covers ResNets"),
    ("v2-cifar10", ["model.bn_splits=1", "model.shuffle_bn=false"], "CIFAR stem"),
])
def test_other_backbones_are_refused_in_one_line_and_nothing_is_written(tmp_path, preset, overrides, why):
    cfg = load_config(preset, overrides)
    with pytest.raises(ExportError, match=why) as caught:
        export_model(build_model(cfg), cfg, "detectron2", tmp_path / "x.pkl")
    assert "\n" not in str(caught.value) and "use --format" in str(caught.value)
    assert not list(tmp_path.iterdir())


def test_an_existing_file_is_kept_without_force(tmp_path):
    cfg = load_config("v1-imagenet", ["model.backbone=resnet18", "model.queue_size=256"])
    model = build_model(cfg)
    out = tmp_path / "r18.pkl"
    out.write_bytes(b"keep")
    with pytest.raises(FileExistsError, match="--force"):
        export_model(model, cfg, "detectron2", out)
    assert out.read_bytes() == b"keep"
    export_model(model, cfg, "detectron2", out, force=True)
    with open(out, "rb") as handle:
        assert "res5.1.conv2.norm.running_mean" in pickle.load(handle)["model"]
    assert [p.name for p in tmp_path.iterdir()] == ["r18.pkl"]  # no temporary file left beside it
