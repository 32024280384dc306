"""Files in the layouts of the official MoCo code, built here from torchvision and timm with the module structure
the official code gives them (read from facebookresearch/moco moco/builder.py and main_moco.py, and
facebookresearch/moco-v3 moco/builder.py, main_moco.py and vits.py), never from mocokit's own modules."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch
from torch import nn


def trained_looking(model: nn.Module) -> nn.Module:
    """Non-default BatchNorm statistics and affine values, so eval-mode outputs depend on every tensor."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                if module.affine:
                    module.weight.uniform_(0.5, 1.5)
                    module.bias.normal_(0, 0.1)
    return model


def v1v2_encoder(resnet: nn.Module, mlp: bool) -> nn.Module:
    """The official v1/v2 encoder from a torchvision ResNet built with `num_classes=dim`: with mlp (v2) its fc
    becomes Sequential(Linear(D, D), ReLU, the old fc)."""
    if mlp:
        width = resnet.fc.weight.shape[1]
        resnet.fc = nn.Sequential(nn.Linear(width, width), nn.ReLU(), resnet.fc)
    return trained_looking(resnet)


class OfficialV1V2(nn.Module):
    """encoder_q, encoder_k, queue (dim×K, columns unit keys) and queue_ptr (1,), as the official MoCo."""

    def __init__(self, make_encoder, dim: int, K: int) -> None:  # noqa: N803 (the official name)
        super().__init__()
        self.encoder_q, self.encoder_k = make_encoder(), make_encoder()  # different values: a swap would show
        self.register_buffer("queue", nn.functional.normalize(torch.randn(dim, K), dim=0))
        self.register_buffer("queue_ptr", torch.tensor([K // 2]))


def save_official(path: Path, model: nn.Module, arch: str, extra: dict | None = None) -> Path:
    """torch.save as the official main_moco.py does, of a DistributedDataParallel model (`module.` prefix), with
    the state of an SGD optimiser that took one step."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.03, momentum=0.9, weight_decay=1e-4)
    for parameter in model.parameters():
        parameter.grad = torch.zeros_like(parameter)
    optimizer.step()
    state = {f"module.{name}": tensor for name, tensor in model.state_dict().items()}
    torch.save({"epoch": 200, "arch": arch, "state_dict": state, "optimizer": optimizer.state_dict(),
                **(extra or {})}, path)
    return path


def v3_mlp(num_layers: int, input_dim: int, mlp_dim: int, output_dim: int, last_bn: bool = True) -> nn.Sequential:
    """The MoCo v3 MLP: Linear(bias=False) layers; BatchNorm1d and ReLU after each hidden one; a BatchNorm1d without
    affine after the last one when last_bn (projectors; the ViT predictor)."""
    layers: list[nn.Module] = []
    for index in range(num_layers):
        d_in = input_dim if index == 0 else mlp_dim
        d_out = output_dim if index == num_layers - 1 else mlp_dim
        layers.append(nn.Linear(d_in, d_out, bias=False))
        if index < num_layers - 1:
            layers += [nn.BatchNorm1d(d_out), nn.ReLU(inplace=True)]
        elif last_bn:
            layers.append(nn.BatchNorm1d(d_out, affine=False))
    return nn.Sequential(*layers)


class OfficialV3(nn.Module):
    """base_encoder, momentum_encoder (the projector replacing the ResNet's fc or the ViT's head) and predictor."""

    def __init__(self, make_backbone, vit: bool, dim: int, mlp_dim: int) -> None:
        super().__init__()
        self.base_encoder, self.momentum_encoder = make_backbone(mlp_dim), make_backbone(mlp_dim)
        classifier = "head" if vit else "fc"
        width = getattr(self.base_encoder, classifier).weight.shape[1]
        for encoder in (self.base_encoder, self.momentum_encoder):
            setattr(encoder, classifier, v3_mlp(3 if vit else 2, width, mlp_dim, dim))
            trained_looking(encoder)
        self.predictor = trained_looking(v3_mlp(2, dim, mlp_dim, dim, last_bn=vit))


def small_timm_vit(num_classes: int) -> nn.Module:
    """A MoCo v3 ViT as vits.py builds it (a timm VisionTransformer, LayerNorm eps 1e-6, qkv bias), made small:
    width 192 (mocokit's vit_tiny, 3 heads), depth 1, 32 px images in 8 px patches."""
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(img_size=32, patch_size=8, embed_dim=192, depth=1, num_heads=3, mlp_ratio=4,
                             qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6), num_classes=num_classes)
