"""The classifier optimiser: head and backbone groups, layer-wise lr decay for ViTs."""

import pytest
import torch

from mocokit.errors import ConfigError
from mocokit.evaluation.classifier import linear_head
from mocokit.evaluation.optim import classifier_optimizer
from mocokit.models.resnet import ResNet
from mocokit.models.vit import build_vit
from mocokit.training.config import OptimConfig


def test_layer_decay_scales_the_lr_down_with_depth_and_leaves_the_head_at_1():
    vit = build_vit("vit_tiny", image_size=32, patch_size=8, depth=3)
    head = linear_head(vit.num_features, 10)
    optimizer = classifier_optimizer(head, OptimConfig(name="adamw", lr=1e-3), 1e-3, backbone=vit, layer_decay=0.5)
    scale_of = {id(p): g.get("lr_scale", 1.0) for g in optimizer.param_groups for p in g["params"]}
    assert scale_of[id(head.weight)] == 1.0
    blocks = [scale_of[id(block.attn.qkv.weight)] for block in vit.blocks]
    assert blocks == [0.5**3, 0.5**2, 0.5**1]  # block i of L=3 at 0.5^(L - i), as BEiT/MAE
    assert scale_of[id(vit.cls_token)] == 0.5**4 and scale_of[id(vit.patch_embed.proj.weight)] == 0.5**4
    trainable = {id(p) for p in [*vit.parameters(), *head.parameters()] if p.requires_grad}
    assert set(scale_of) == trainable  # every trainable parameter once, frozen ones (positions) left out


def test_without_decay_the_backbone_trains_at_the_heads_lr_and_resnets_refuse_decay():
    resnet = ResNet("resnet18", width=0.125, cifar_stem=True)
    head = linear_head(resnet.num_features, 10)
    optimizer = classifier_optimizer(head, OptimConfig(), 0.1, backbone=resnet)
    grouped = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert grouped == {id(p) for p in [*resnet.parameters(), *head.parameters()]}
    assert all(g.get("lr_scale", 1.0) == 1.0 for g in optimizer.param_groups)
    with pytest.raises(ConfigError, match="finetune.layer_decay=null"):
        classifier_optimizer(head, OptimConfig(), 0.1, backbone=resnet, layer_decay=0.7)
    assert isinstance(optimizer, torch.optim.SGD)
