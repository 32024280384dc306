import pytest
import torch
import torchvision

from mocokit.models.backbones import build_backbone
from mocokit.models.config import ModelConfig
from mocokit.models.resnet import ResNet


@pytest.mark.parametrize(
    "name,width,features", [("resnet18", 1.0, 512), ("resnet18", 0.25, 128), ("resnet34", 0.5, 256),
                            ("resnet50", 0.25, 512), ("wide_resnet50_2", 0.125, 256)]
)
def test_resnet_contract_and_widths(name, width, features):
    net = build_backbone(ModelConfig(backbone=name, width=width, cifar_stem=True))
    assert net.num_features == features
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, features)


def test_resnet18_quarter_width_has_16_32_64_128_channels():
    net = ResNet("resnet18", width=0.25)
    assert [net.layer1[0].conv1.out_channels, net.layer2[0].conv1.out_channels, net.layer3[0].conv1.out_channels,
            net.layer4[0].conv1.out_channels] == [16, 32, 64, 128]


def test_cifar_stem_keeps_resolution_and_standard_stem_downsamples():
    cifar, standard = ResNet("resnet18", cifar_stem=True), ResNet("resnet18")
    assert cifar.conv1.kernel_size == (3, 3) and cifar.conv1.stride == (1, 1)
    assert isinstance(cifar.maxpool, torch.nn.Identity)
    x = torch.randn(1, 3, 32, 32)
    assert cifar.layer1(cifar.maxpool(cifar.relu(cifar.bn1(cifar.conv1(x))))).shape[-1] == 32
    assert standard.layer1(standard.maxpool(standard.relu(standard.bn1(standard.conv1(x))))).shape[-1] == 8


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_full_width_resnet_state_dict_loads_into_torchvision(name):
    ours = ResNet(name)
    reference = getattr(torchvision.models, name)()
    reference.fc = torch.nn.Identity()
    reference.load_state_dict(ours.state_dict(), strict=True)
    reference.eval(), ours.eval()
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(reference(x), ours(x))


def test_zero_init_residual_zeroes_the_last_bn_of_each_block():
    net = ResNet("resnet50", width=0.25, zero_init_residual=True)
    last_bns = [block.bn3.weight.detach() for stage in (net.layer1, net.layer4) for block in stage]
    assert all(float(w.abs().sum()) == 0 for w in last_bns)
    assert float(ResNet("resnet18", zero_init_residual=False).layer1[0].bn2.weight.detach().sum()) > 0


def test_any_timm_model_is_a_backbone():
    net = build_backbone(ModelConfig(backbone="timm:convnext_atto"))
    assert net.num_features == 320
    assert net(torch.randn(2, 3, 64, 64)).shape == (2, 320)


def test_unknown_backbones_are_clear_errors():
    with pytest.raises(ValueError, match="unknown model.backbone 'resnet19'"):
        build_backbone(ModelConfig(backbone="resnet19"))
    with pytest.raises(ValueError, match="timm has no model"):
        build_backbone(ModelConfig(backbone="timm:not_a_model"))
