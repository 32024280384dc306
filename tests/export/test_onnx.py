"""`--format onnx`: the backbone run by onnxruntime gives the torch backbone's features on random images, at any
batch size; a missing package of the `export` extra is one line with the pip command."""

import json

import onnx
import onnxruntime
import pytest
import torch

from mocokit.export import ExportError, export_model, onnx_file
from mocokit.models import build_model
from mocokit.training.run_config import load_config

from .conftest import trained_looking


@pytest.mark.parametrize(("preset", "overrides", "size"), [
    ("v2-cifar10", ["model.width=0.25"], 32),  # a ResNet-18, CIFAR stem
    ("v3-vit-cifar10", ["model.backbone_args={depth: 2}"], 32),  # a ViT-S of depth 2
])
@torch.no_grad()
def test_onnxruntime_gives_the_backbone_s_features_at_any_batch_size(tmp_path, preset, overrides, size):
    cfg = load_config(preset, ["model.bn_splits=1", "model.shuffle_bn=false", "model.queue_size=64", *overrides])
    model = trained_looking(build_model(cfg)).eval()
    result = export_model(model, cfg, "onnx", tmp_path / "backbone.onnx", step=3)
    assert result.onnx_difference is not None and result.onnx_difference < 1e-4
    session = onnxruntime.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    for batch in (1, 5):
        images = torch.randn(batch, 3, size, size)
        features = session.run(["features"], {"images": images.numpy()})[0]
        expected = model.backbone(images)
        assert features.shape == tuple(expected.shape) == (batch, model.backbone.num_features)
        torch.testing.assert_close(torch.from_numpy(features), expected, rtol=0, atol=1e-4)
    metadata = {p.key: json.loads(p.value) for p in onnx.load(str(result.path)).metadata_props}
    assert (metadata["export_format"], metadata["step"], metadata["preprocessing"]["image_size"]) == ("onnx", 3, 32)
    assert [p.name for p in tmp_path.iterdir()] == ["backbone.onnx"]  # one file, no external data, no temporary


def test_a_missing_package_names_the_extra_and_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_file, "PACKAGES", ("onnx", "no_such_onnx_package"))
    cfg = load_config("v2-cifar10", ["model.width=0.25", "model.bn_splits=1", "model.shuffle_bn=false"])
    with pytest.raises(ExportError, match=r"^--format onnx needs no_such_onnx_package: "
                                          r"pip install 'mocokit\[export\]'$"):
        export_model(build_model(cfg), cfg, "onnx", tmp_path / "x.onnx")
    assert not list(tmp_path.iterdir())
