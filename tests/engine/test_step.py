from contextlib import nullcontext

import torch
from torch import nn

from mocokit.engine.step import StepRunner


class Scaled(nn.Module):
    """A stand-in for MoCo: a loss whose gradient is large (norm 100 × the weight count's square root)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(16))

    def forward(self, view1, view2, momentum):
        return {"loss": 100 * (self.weight - 1).sum(), "accuracy": torch.zeros(())}

    needs_indices = False  # MoCo's step protocol (models/moco.py), with no dictionary to write

    def end_step(self) -> None:
        pass


def step_change(grad_clip):
    model = Scaled()
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    runner = StepRunner(model, optimizer, torch.device("cpu"), nullcontext, grad_clip=grad_clip,
                        watched={"weight": model.weight})
    out = runner((torch.zeros(2, 3), torch.zeros(2, 3)), lr=0.5, momentum=0.9, measure_grads=True)
    return float(model.weight.detach().norm()), out


def test_grad_clip_bounds_the_update_and_the_logged_norm_is_the_raw_one():
    unclipped, out = step_change(None)
    assert unclipped == 0.5 * 100 * 4  # lr × ‖grad‖ = 0.5 × 100·sqrt(16)
    assert float(out.grad_norm["weight"]) == 400.0
    clipped, out = step_change(1.0)
    assert abs(clipped - 0.5) < 1e-5  # lr × clip
    assert float(out.grad_norm["weight"]) == 400.0  # measured before clipping: spikes stay visible


def test_the_watched_first_layer_is_the_patch_projection_of_a_vit_or_the_first_conv_of_a_resnet():
    from mocokit.engine.step import watched_parameters
    from mocokit.models import ModelConfig, build_model

    vit = {"version": "v3", "hidden_dim": 32, "dim": 16, "shuffle_bn": False, "backbone": "vit_tiny",
           "image_size": 16, "patch_size": 8, "backbone_args": {"depth": 2}}
    trainable = list(watched_parameters(build_model(ModelConfig(**vit))))
    frozen = list(watched_parameters(build_model(ModelConfig(**vit, freeze_patch_embed=True))))
    # not the class token or the position embedding, which come first in timm's parameter order
    assert trainable[0] == "backbone.patch_embed.proj.weight"
    assert frozen[0] == "backbone.blocks.0.attn.qkv.weight"  # the first layer that still learns
    assert trainable[1] == frozen[1] == "backbone.blocks.1.mlp.fc2.weight" and trainable[2].startswith("head.")
    resnet = build_model(ModelConfig(version="v2", backbone="resnet18", width=0.125, cifar_stem=True, queue_size=16,
                                          bn_splits=2))
    assert list(watched_parameters(resnet))[:2] == ["backbone.conv1.weight", "backbone.layer4.1.conv2.weight"]
