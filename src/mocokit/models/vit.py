"""Vision Transformers for MoCo v3 (Chen, Xie, He 2021, section 4), built on timm's VisionTransformer.

What MoCo v3 changes from a standard ViT: a fixed 2D sin-cos position embedding (not trained), its own weight
initialisation, and optionally a random patch projection that stays frozen for the whole run (the stability trick).
"""

from __future__ import annotations

import math
from functools import partial

import torch
from timm.models.vision_transformer import Attention, VisionTransformer
from torch import nn

# name: (width, depth, heads). ViT-S uses 12 heads in MoCo v3 (DeiT-S uses 6).
VIT_SIZES: dict[str, tuple[int, int, int]] = {
    "vit_tiny": (192, 12, 3),
    "vit_small": (384, 12, 12),
    "vit_base": (768, 12, 12),
    "vit_large": (1024, 24, 16),
}


def sincos_2d_position_embedding(grid: tuple[int, int], dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """Fixed 2D sin-cos position embedding for a (rows, cols) patch grid -> (rows·cols)×dim.

    Token t = r·cols + c (timm flattens patches row by row) gets [sin(r·ω), cos(r·ω), sin(c·ω), cos(c·ω)] with
    ω_i = temperature^(−i/(dim/4)): the row terms first, as the official MoCo v3 code on its square grids (it flattens
    a (w, h) meshgrid, whose slow axis is the row of timm's token order). On a non-square grid the official code
    swaps the axes; here rows and columns follow the token order on any grid.
    """
    if dim % 4:
        raise ValueError(f"the sin-cos position embedding needs a width divisible by 4, got {dim}")
    rows, cols = grid
    row_index, col_index = torch.meshgrid(
        torch.arange(rows, dtype=torch.float64), torch.arange(cols, dtype=torch.float64), indexing="ij"
    )  # rows×cols each
    quarter = dim // 4
    omega = 1.0 / temperature ** (torch.arange(quarter, dtype=torch.float64) / quarter)  # dim/4
    angle_col = col_index.flatten()[:, None] * omega[None, :]  # (rows·cols)×dim/4
    angle_row = row_index.flatten()[:, None] * omega[None, :]
    embedding = torch.cat([angle_row.sin(), angle_row.cos(), angle_col.sin(), angle_col.cos()], dim=1)
    return embedding.float()


def build_vit(
    size: str = "vit_small",
    image_size: int | tuple[int, int] = 224,
    patch_size: int = 16,
    freeze_patch_embed: bool = False,
    **overrides,
) -> VisionTransformer:
    """A MoCo v3 ViT: images N×3×H×W -> class-token features N×num_features (timm model, no classifier).

    `overrides` go to timm's VisionTransformer (e.g. depth=2 for a test-sized model, drop_path_rate=0.1)."""
    if size not in VIT_SIZES:
        raise ValueError(f"unknown ViT size {size!r}; choose one of {', '.join(VIT_SIZES)}")
    width, depth, heads = VIT_SIZES[size]
    kwargs = dict(embed_dim=width, depth=depth, num_heads=heads, mlp_ratio=4.0, qkv_bias=True)
    kwargs.update(overrides)
    vit = VisionTransformer(
        img_size=image_size,
        patch_size=patch_size,
        num_classes=0,
        global_pool="token",
        class_token=True,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
        **kwargs,
    )
    _init_moco_v3(vit)
    if freeze_patch_embed:
        for param in vit.patch_embed.proj.parameters():
            param.requires_grad_(False)
    return vit


@torch.no_grad()
def _init_moco_v3(vit: VisionTransformer) -> None:
    """MoCo v3's ViT initialisation: qkv as three separate xavier-uniform matrices, other Linear xavier-uniform with
    zero bias, cls token N(0, 1e-6), patch projection uniform ±sqrt(6/(3·p·p + D)), fixed sin-cos positions."""
    width = vit.embed_dim
    for module in vit.modules():
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    for module in vit.modules():
        if isinstance(module, Attention):  # q, k and v each count as a D×D matrix for the fan
            fan = module.qkv.weight.shape[0] // 3 + module.qkv.weight.shape[1]
            bound = math.sqrt(6.0 / fan)
            nn.init.uniform_(module.qkv.weight, -bound, bound)
    nn.init.normal_(vit.cls_token, std=1e-6)

    proj = vit.patch_embed.proj
    bound = math.sqrt(6.0 / float(3 * proj.kernel_size[0] * proj.kernel_size[1] + width))
    nn.init.uniform_(proj.weight, -bound, bound)
    nn.init.zeros_(proj.bias)

    # Position embedding: a zero vector for the cls token, then the patch grid; never trained.
    positions = sincos_2d_position_embedding(vit.patch_embed.grid_size, width)
    vit.pos_embed.copy_(torch.cat([torch.zeros(1, width), positions], dim=0)[None])
    vit.pos_embed.requires_grad_(False)
