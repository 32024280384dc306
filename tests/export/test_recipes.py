"""Exports load with strict=True into torchvision and timm models built as docs/export.md says, same outputs."""

import pytest
import timm
import torch
import torchvision
from torch import nn

from mocokit.export import ExportError, Recipe, build_from_recipe, recipe_for, torchvision_resnet
from mocokit.models.config import ModelConfig


def tv_resnet(name: str, cifar_stem: bool = False) -> nn.Module:
    model = getattr(torchvision.models, name)()
    model.fc = nn.Identity()
    if cifar_stem:
        model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    return model


def timm_resnet(name: str, cifar_stem: bool = False) -> nn.Module:
    model = timm.create_model(name, num_classes=0)
    if cifar_stem:
        model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    return model


VIT = ["model.version=v3", "model.backbone=vit_small", "model.image_size=32", "model.patch_size=4",
       "model.backbone_args={depth: 2}"]
CASES = {  # id: (format, overrides, the target model as documented, input side)
    "tv-resnet18": ("torchvision", ["model.backbone=resnet18", "model.cifar_stem=false"],
                    lambda: tv_resnet("resnet18"), 64),
    "tv-resnet18-cifar": ("torchvision", ["model.backbone=resnet18"], lambda: tv_resnet("resnet18", True), 32),
    "tv-resnet18-cifar-w0.25": ("torchvision", ["model.backbone=resnet18", "model.width=0.25"],
                                lambda: torchvision_resnet("resnet18", width=0.25, cifar_stem=True), 32),
    "tv-wide50-w0.25": ("torchvision", ["model.backbone=wide_resnet50_2", "model.width=0.25",
                                        "model.cifar_stem=false"],
                        lambda: torchvision_resnet("wide_resnet50_2", width=0.25), 64),
    "tv-resnet50": ("torchvision", ["model.backbone=resnet50", "model.cifar_stem=false"],
                    lambda: tv_resnet("resnet50"), 32),
    "timm-resnet18": ("timm", ["model.backbone=resnet18", "model.cifar_stem=false"],
                      lambda: timm_resnet("resnet18"), 64),
    "timm-resnet18-cifar": ("timm", ["model.backbone=resnet18"], lambda: timm_resnet("resnet18", True), 32),
    "timm-resnet50": ("timm", ["model.backbone=resnet50", "model.cifar_stem=false"],
                      lambda: timm_resnet("resnet50"), 32),
    "timm-vit-small-depth2": ("timm", VIT, lambda: timm.create_model(
        "vit_small_patch16_224", img_size=32, patch_size=4, embed_dim=384, depth=2, num_heads=12, num_classes=0,
        global_pool="token"), 32),
    "timm-mobilenetv3": ("timm", ["model.backbone=timm:mobilenetv3_small_050"],
                         lambda: timm.create_model("mobilenetv3_small_050", num_classes=0), 64),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_export_loads_strictly_into_the_documented_model_with_identical_outputs(exported, case):
    fmt, overrides, documented_target, side = CASES[case]
    model, _cfg, tensors, metadata = exported(fmt, "model.version=v1", *overrides)  # v1: the lightest head
    x = torch.randn(2, 3, side, side)
    with torch.no_grad():
        expected = model.backbone(x)
        for target in (documented_target(), build_from_recipe(Recipe(**metadata["recipe"]))):
            target.eval()
            assert not torch.allclose(target(x), expected)  # a fresh model differs: the load below matters
            target.load_state_dict(tensors, strict=True)
            torch.testing.assert_close(target(x), expected, rtol=1e-5, atol=1e-5)
    assert metadata["export_format"] == fmt and metadata["step"] == 7 and metadata["source_checkpoint"] == "ckpt.pt"


def test_the_width_builder_returns_a_real_torchvision_resnet_with_scaled_channels():
    model = torchvision_resnet("resnet50", width=0.5, cifar_stem=True)
    assert type(model) is torchvision.models.ResNet
    assert model.conv1.out_channels == 32 and model.conv1.stride == (1, 1) and isinstance(model.maxpool, nn.Identity)
    assert model.layer4[-1].conv3.out_channels == 1024 and isinstance(model.fc, nn.Identity)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 1024)


def test_the_printed_python_builds_the_same_model_as_the_recipe():
    recipe = recipe_for(ModelConfig(backbone="resnet18", cifar_stem=True), "torchvision")
    namespace: dict = {}
    exec(recipe.python(), namespace)  # the code users copy from the command's output
    built = namespace["model"]
    assert isinstance(built.maxpool, nn.Identity) and isinstance(built.fc, nn.Identity)
    assert built.conv1.kernel_size == (3, 3)
    reference = {k: v.shape for k, v in build_from_recipe(recipe).state_dict().items()}
    assert {k: v.shape for k, v in built.state_dict().items()} == reference


@pytest.mark.parametrize("backbone,width,fmt,hint", [
    ("vit_small", 1.0, "torchvision", "--format timm"),
    ("timm:resnet18", 1.0, "torchvision", "--format timm"),
    ("resnet18", 0.25, "timm", "--format torchvision"),
    ("resnet18", 1.0, "onnx", "choose torchvision or timm"),
])
def test_unsupported_combinations_are_refused_with_the_formats_that_work(backbone, width, fmt, hint):
    with pytest.raises(ExportError, match=hint):
        recipe_for(ModelConfig(backbone=backbone, width=width), fmt)


def test_a_recipe_never_calls_code_outside_the_model_libraries():
    with pytest.raises(ExportError, match="not one of"):
        build_from_recipe(Recipe("os.system", ["echo hacked"]))


def test_timm_backbone_args_are_kept_except_pretrained():
    recipe = recipe_for(ModelConfig(backbone="timm:resnet18", backbone_args={"pretrained": True, "drop_rate": 0.1}),
                        "timm")
    assert recipe.args == ["resnet18"] and recipe.kwargs == {"num_classes": 0, "drop_rate": 0.1}
