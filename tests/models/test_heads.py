import torch
from torch import nn

from mocokit.models.heads import mlp, v1_head, v2_head, v3_predictor, v3_projector


def layer_types(module):
    return [type(m).__name__ for m in module]


def test_v1_is_one_linear_layer():
    head = v1_head(512, 128)
    assert layer_types(head) == ["Linear"] and head[0].bias is not None


def test_v2_mlp_has_backbone_width_hidden_layer_with_bias_and_no_bn():
    head = v2_head(2048, 128)
    assert layer_types(head) == ["Linear", "ReLU", "Linear"]
    assert head[0].weight.shape == (2048, 2048) and head[2].weight.shape == (128, 2048)
    assert head[0].bias is not None


def test_v3_resnet_projector_and_predictor():
    projector = v3_projector(2048, 4096, 256, num_layers=2)
    assert layer_types(projector) == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d"]
    assert projector[0].bias is None and not projector[-1].affine
    predictor = v3_predictor(256, 4096, num_layers=2, last_bn=False)
    assert layer_types(predictor) == ["Linear", "BatchNorm1d", "ReLU", "Linear"]


def test_v3_vit_projector_has_three_layers_and_predictor_ends_in_bn():
    projector = v3_projector(384, 4096, 256, num_layers=3)
    assert [m.weight.shape for m in projector if isinstance(m, nn.Linear)] == [(4096, 384), (4096, 4096), (256, 4096)]
    assert isinstance(v3_predictor(256, 4096, 2, last_bn=True)[-1], nn.BatchNorm1d)


def test_mlp_maps_shapes():
    assert mlp([5, 7, 3], batch_norm=True, bias=False)(torch.randn(4, 5)).shape == (4, 3)
