import math

import pytest
import torch
from timm.models.vision_transformer import Attention

from mocokit.models.vit import build_vit, sincos_2d_position_embedding


def expected_embedding(row, col, dim, temperature=10000.0):
    quarter = dim // 4
    omega = [temperature ** (-i / quarter) for i in range(quarter)]
    return (
        [math.sin(row * w) for w in omega]
        + [math.cos(row * w) for w in omega]
        + [math.sin(col * w) for w in omega]
        + [math.cos(col * w) for w in omega]
    )


def official_moco_v3_embedding(grid_size, dim, temperature=10000.0):
    """The official MoCo v3 `build_2d_sincos_position_embedding` (vits.py), written out with loops: a meshgrid of
    (w, h) in "ij" order flattened, the first half of the features from its slow axis."""
    h, w = grid_size
    quarter = dim // 4
    omega = [1.0 / temperature ** (i / quarter) for i in range(quarter)]
    rows = []
    for slow in range(w):  # grid_w, the meshgrid's first axis
        for fast in range(h):
            rows.append([math.sin(slow * o) for o in omega] + [math.cos(slow * o) for o in omega]
                        + [math.sin(fast * o) for o in omega] + [math.cos(fast * o) for o in omega])
    return torch.tensor(rows)


@pytest.mark.parametrize("grid", [(2, 3), (3, 2), (4, 4), (1, 5)])
def test_sincos_embedding_puts_rows_and_columns_on_the_right_axes(grid):
    rows, cols = grid
    embedding = sincos_2d_position_embedding(grid, 16)
    assert embedding.shape == (rows * cols, 16)
    for r in range(rows):
        for c in range(cols):  # timm flattens patches row by row: token r·cols + c
            expected = torch.tensor(expected_embedding(r, c, 16), dtype=torch.float32)
            torch.testing.assert_close(embedding[r * cols + c], expected)


@pytest.mark.parametrize("side", [1, 2, 4, 14])
def test_sincos_embedding_equals_the_official_one_on_square_grids(side):
    torch.testing.assert_close(sincos_2d_position_embedding((side, side), 32),
                               official_moco_v3_embedding((side, side), 32), rtol=0, atol=1e-6)


def test_vit_on_a_non_square_image_uses_the_fixed_embedding():
    vit = build_vit("vit_tiny", image_size=(32, 48), patch_size=16, depth=1)
    assert tuple(vit.patch_embed.grid_size) == (2, 3)
    assert not vit.pos_embed.requires_grad
    assert torch.equal(vit.pos_embed[0, 0], torch.zeros(192))  # the cls token's position is a zero vector
    torch.testing.assert_close(vit.pos_embed[0, 1:], sincos_2d_position_embedding((2, 3), 192))
    assert vit(torch.randn(2, 3, 32, 48)).shape == (2, vit.num_features)


def test_v3_initialisation():
    vit = build_vit("vit_small", image_size=32, patch_size=16, depth=2)
    width = 384
    qkv_bound = math.sqrt(6 / (width + width))  # q, k and v each count as width×width
    for module in vit.modules():
        if isinstance(module, Attention):
            w = module.qkv.weight
            assert w.abs().max() <= qkv_bound and w.abs().max() > 0.95 * qkv_bound
            assert torch.equal(module.qkv.bias, torch.zeros_like(module.qkv.bias))
    fc1 = vit.blocks[0].mlp.fc1.weight  # xavier uniform: bound sqrt(6 / (fan_in + fan_out))
    assert fc1.abs().max() <= math.sqrt(6 / (width + 4 * width))
    patch_bound = math.sqrt(6 / (3 * 16 * 16 + width))
    proj = vit.patch_embed.proj.weight
    assert proj.abs().max() <= patch_bound and proj.abs().max() > 0.95 * patch_bound
    assert vit.cls_token.abs().max() < 1e-5
    assert vit.norm.eps == 1e-6 and vit.blocks[0].attn.num_heads == 12


def test_frozen_patch_projection_is_unchanged_after_an_optimiser_step():
    vit = build_vit("vit_tiny", image_size=32, patch_size=8, depth=2, freeze_patch_embed=True)
    frozen = {name: p.clone() for name, p in vit.patch_embed.named_parameters()}
    others = {name: p.clone() for name, p in vit.blocks.named_parameters()}
    optimiser = torch.optim.AdamW(vit.parameters(), lr=1e-2, weight_decay=0.1)  # all parameters, decay included
    vit(torch.randn(4, 3, 32, 32)).square().mean().backward()
    optimiser.step()
    assert all(torch.equal(p, frozen[name]) for name, p in vit.patch_embed.named_parameters())
    assert all(not p.requires_grad for p in vit.patch_embed.parameters())
    assert any(not torch.equal(p, others[name]) for name, p in vit.blocks.named_parameters())


def test_trainable_patch_projection_when_not_frozen():
    vit = build_vit("vit_tiny", image_size=32, patch_size=8, depth=1, freeze_patch_embed=False)
    assert vit.patch_embed.proj.weight.requires_grad
