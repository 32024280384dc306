"""The MoCo checkpoints of mmpretrain (mmselfsup), lightly and solo-learn, written here in each framework's layout
(read from open-mmlab/mmpretrain models/selfsup/moco.py and necks/mocov2_neck.py, lightly's MoCo examples and
models/modules/heads.py, vturrisi/solo-learn methods/mocov2plus.py and mocov3.py) with torchvision modules, never
mocokit's: after import the features, heads and queue equal the foreign model's."""

from __future__ import annotations

import copy

import torch
import torchvision
from torch import nn

from mocokit.evaluation.pretrained import load_pretrained
from mocokit.export.importer import import_weights

from .foreign import trained_looking, v3_mlp

IMAGES = torch.randn(2, 3, 32, 32)


def resnet18_trunk(cifar_stem: bool = False) -> nn.Module:
    """A torchvision ResNet-18 without its classifier (fc = Identity: pooled features out), trained-looking."""
    model = torchvision.models.resnet18()
    if cifar_stem:
        model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    model.fc = nn.Identity()
    return trained_looking(model)


def v2_mlp(width: int, hidden: int, dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, dim))


class Holder(nn.Module):
    """Modules under the attribute names a framework gives them."""

    def __init__(self, **modules: nn.Module) -> None:
        super().__init__()
        for name, module in modules.items():
            setattr(self, name, module)


@torch.no_grad()
def test_mmpretrain_moco_v2(tmp_path):
    neck, momentum_neck = Holder(mlp=v2_mlp(512, 512, 128)), Holder(mlp=v2_mlp(512, 512, 128))
    encoder_k = Holder(module=nn.Sequential(resnet18_trunk(), momentum_neck))
    encoder_k.register_buffer("steps", torch.tensor(1234))  # mmengine's ExponentialMovingAverage counter
    model = Holder(backbone=resnet18_trunk(), neck=neck, encoder_k=encoder_k)
    model.register_buffer("queue", nn.functional.normalize(torch.randn(128, 64), dim=0))
    model.register_buffer("queue_ptr", torch.tensor([32]))
    torch.save({"meta": {"epoch": 200, "mmengine_version": "0.7.3"}, "state_dict": model.state_dict()},
               tmp_path / "mocov2_resnet18.pth")

    result = import_weights(tmp_path / "mocov2_resnet18.pth", tmp_path / "mm.pt")
    cfg = result.config.model
    assert (result.layout, cfg.version, cfg.dim, cfg.hidden_dim, cfg.queue_size) == ("mmpretrain", "v2", 128, 512, 64)
    assert any("'encoder_k.steps'" in note for note in result.report.notes)
    mine = load_pretrained(tmp_path / "mm.pt", say=lambda _m: None).model
    features = model.backbone.eval()(IMAGES)
    torch.testing.assert_close(mine.backbone(IMAGES), features, rtol=0, atol=0)
    torch.testing.assert_close(mine.encoder.head(features), neck.mlp(features), rtol=0, atol=0)
    key_backbone = encoder_k.module[0].eval()
    torch.testing.assert_close(mine.momentum_encoder(IMAGES), momentum_neck.mlp(key_backbone(IMAGES)), rtol=0, atol=0)
    assert torch.equal(mine.queue.keys, model.queue.t()) and int(mine.queue.ptr) == 32


@torch.no_grad()
def test_mmpretrain_moco_v1_linear_neck(tmp_path):
    model = Holder(backbone=resnet18_trunk(), neck=Holder(fc=nn.Linear(512, 128)),
                   encoder_k=Holder(module=nn.Sequential(resnet18_trunk(), Holder(fc=nn.Linear(512, 128)))))
    model.encoder_k.register_buffer("steps", torch.tensor(7))
    torch.save({"meta": {}, "state_dict": model.state_dict()}, tmp_path / "mocov1.pth")
    result = import_weights(tmp_path / "mocov1.pth", tmp_path / "v1.pt")
    assert (result.config.model.version, result.config.model.dim) == ("v1", 128)
    mine = load_pretrained(tmp_path / "v1.pt", say=lambda _m: None).model
    features = model.backbone.eval()(IMAGES)
    torch.testing.assert_close(mine.encoder.head(features), model.neck.fc(features), rtol=0, atol=0)


@torch.no_grad()
def test_lightly_moco_v2_lightning_checkpoint(tmp_path):
    def children_backbone() -> nn.Sequential:  # lightly's examples: nn.Sequential(*list(resnet.children())[:-1])
        resnet = trained_looking(torchvision.models.resnet18())
        return nn.Sequential(*list(resnet.children())[:-1])

    backbone = children_backbone()
    head = Holder(layers=v2_mlp(512, 512, 128))  # MoCoProjectionHead(512, 512, 128)
    model = Holder(backbone=backbone, projection_head=head, backbone_momentum=children_backbone(),
                   projection_head_momentum=copy.deepcopy(head),
                   criterion=Holder(memory_bank=Holder()))
    model.criterion.memory_bank.register_buffer("bank", torch.randn(128, 4096))  # older lightly saved it
    checkpoint = {"epoch": 199, "global_step": 39000, "pytorch-lightning_version": "2.1.0",
                  "state_dict": model.state_dict(), "optimizer_states": [], "lr_schedulers": []}
    torch.save(checkpoint, tmp_path / "epoch=199.ckpt")

    result = import_weights(tmp_path / "epoch=199.ckpt", tmp_path / "lightly.pt")
    assert (result.layout, result.config.model.version, result.config.model.backbone) == ("lightly", "v2", "resnet18")
    assert any("memory bank" in note for note in result.report.notes)
    mine = load_pretrained(tmp_path / "lightly.pt", say=lambda _m: None).model
    features = backbone.eval()(IMAGES).flatten(start_dim=1)
    torch.testing.assert_close(mine.backbone(IMAGES), features, rtol=0, atol=0)
    torch.testing.assert_close(mine.encoder.head(features), head.layers(features), rtol=0, atol=0)
    momentum = model.backbone_momentum.eval()(IMAGES).flatten(start_dim=1)
    torch.testing.assert_close(mine.momentum_encoder.backbone(IMAGES), momentum, rtol=0, atol=0)


@torch.no_grad()
def test_solo_learn_moco_v3_cifar(tmp_path):
    model = Holder(backbone=resnet18_trunk(cifar_stem=True), momentum_backbone=resnet18_trunk(cifar_stem=True),
                   projector=trained_looking(v3_mlp(2, 512, 64, 32)),
                   momentum_projector=trained_looking(v3_mlp(2, 512, 64, 32)),
                   predictor=trained_looking(v3_mlp(2, 32, 64, 32, last_bn=False)),
                   classifier=nn.Linear(512, 10), momentum_classifier=nn.Linear(512, 10))
    torch.save({"epoch": 999, "state_dict": model.state_dict()}, tmp_path / "mocov3-cifar.ckpt")

    result = import_weights(tmp_path / "mocov3-cifar.ckpt", tmp_path / "solo")
    cfg = result.config.model
    assert (result.layout, cfg.version, cfg.cifar_stem, cfg.projector_layers, cfg.predictor_layers) == (
        "solo-learn", "v3", True, 2, 2)
    assert any("'classifier.weight'" in note for note in result.report.notes)
    mine = load_pretrained(tmp_path / "solo", say=lambda _m: None).model
    model.eval()
    features = model.backbone(IMAGES)
    torch.testing.assert_close(mine.backbone(IMAGES), features, rtol=0, atol=0)
    z = model.projector(features)
    torch.testing.assert_close(mine.encoder(IMAGES), z, rtol=0, atol=0)
    torch.testing.assert_close(mine.predictor(z), model.predictor(z), rtol=0, atol=0)
    momentum = model.momentum_projector(model.momentum_backbone(IMAGES))
    torch.testing.assert_close(mine.momentum_encoder(IMAGES), momentum, rtol=0, atol=0)


@torch.no_grad()
def test_solo_learn_moco_v2plus_queues_are_said_not_used(tmp_path):
    model = Holder(backbone=resnet18_trunk(), momentum_backbone=resnet18_trunk(), projector=v2_mlp(512, 256, 128),
                   momentum_projector=v2_mlp(512, 256, 128), classifier=nn.Linear(512, 10))
    model.register_buffer("queue", torch.randn(2, 128, 64))
    model.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))
    torch.save({"state_dict": model.state_dict()}, tmp_path / "mocov2plus.ckpt")
    result = import_weights(tmp_path / "mocov2plus.ckpt", tmp_path / "v2plus.pt")
    assert (result.config.model.version, result.config.model.hidden_dim) == ("v2", 256)
    (note,) = [note for note in result.report.notes if "two queues" in note and "'queue'" in note]
    assert "`mocokit import` writes random unit keys" in note and "model.init fills its queue" in note
    mine = load_pretrained(tmp_path / "v2plus.pt", say=lambda _m: None).model
    keys = mine.queue.keys  # as the note says: a fresh model's queue of random unit keys, not solo-learn's queues
    torch.testing.assert_close(keys.norm(dim=1), torch.ones(keys.shape[0]))
    assert not any(torch.equal(keys[:64].t(), queue) for queue in model.queue)
    features = model.backbone.eval()(IMAGES)
    torch.testing.assert_close(mine.encoder(IMAGES), model.projector(features), rtol=0, atol=0)
