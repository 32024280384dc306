"""The whole MoCo model as safetensors: every tensor, queue included, reloads into build_model(cfg)."""

import pytest
import torch

from mocokit.export import ExportError, load_moco_safetensors


@pytest.mark.parametrize("overrides", [
    ["model.backbone=resnet18", "model.width=0.125"],
    ["model.version=v3", "model.backbone=vit_tiny", "model.image_size=32", "model.patch_size=8",
     "model.backbone_args={depth: 1}", "model.hidden_dim=64"],
], ids=["v2-resnet18", "v3-vit"])
def test_the_moco_export_reloads_every_tensor_and_the_config(exported, tmp_path, overrides):
    model, cfg, tensors, metadata = exported("moco", *overrides)
    state = model.state_dict()
    assert tensors.keys() == state.keys()
    assert any(k.startswith("momentum_encoder.") for k in tensors)
    assert ("queue.keys" in tensors) == (cfg.model.version == "v2")
    reloaded, reloaded_cfg = load_moco_safetensors(tmp_path / "moco.safetensors")
    assert reloaded_cfg == cfg and not reloaded.training
    for name, tensor in reloaded.state_dict().items():
        assert torch.equal(tensor, state[name]), name
    assert metadata["moco_version"] == cfg.model.version and metadata["backbone"] == cfg.model.backbone
    assert metadata["mocokit_version"] and metadata["preprocessing"]["image_size"] == cfg.data.image_size


def test_a_backbone_export_is_not_taken_for_a_moco_one(exported, tmp_path):
    exported("timm", "model.backbone=resnet18", "model.width=1.0")
    with pytest.raises(ExportError, match="not a mocokit --format moco export"):
        load_moco_safetensors(tmp_path / "timm.safetensors")
