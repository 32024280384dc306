"""The per-image augmentation backend: a torchvision.transforms.v2 pipeline per view, run in DataLoader workers.

This is the reference implementation of every recipe (`recipes.py`): it is built from torchvision's own transforms,
in the order of the official MoCo code, and works on PIL images (decoding, cropping and colour operations in
8-bit, as the official code does). The eval transform lives here too.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from PIL import Image
from torchvision.transforms import InterpolationMode, v2

from mocokit.data.recipes import Recipe, ViewRecipe


def view_transform(view: ViewRecipe, recipe: Recipe, size: int) -> v2.Compose:
    """PIL RGB image -> one augmented view, float 3 x size x size, normalised with the recipe's mean/std."""
    b, c, s, h = view.jitter
    jitter = v2.ColorJitter(brightness=b, contrast=c, saturation=s, hue=h)
    steps: list[Callable] = [
        v2.RandomResizedCrop(
            size, scale=view.crop_scale, ratio=view.crop_ratio, interpolation=InterpolationMode.BILINEAR
        )
    ]
    grayscale = v2.RandomGrayscale(p=view.grayscale_p)
    if view.grayscale_first:
        steps.append(grayscale)
    steps.append(jitter if view.jitter_p >= 1.0 else v2.RandomApply([jitter], p=view.jitter_p))
    if not view.grayscale_first:
        steps.append(grayscale)
    if view.blur_p > 0:
        blur = v2.GaussianBlur(view.blur_kernel_size(size), sigma=view.blur_sigma)
        steps.append(v2.RandomApply([blur], p=view.blur_p))
    if view.solarize_p > 0:
        steps.append(v2.RandomSolarize(threshold=view.solarize_threshold, p=view.solarize_p))
    steps += [
        v2.RandomHorizontalFlip(p=view.flip_p),
        v2.PILToTensor(),  # 3 x S x S uint8
        v2.ToDtype(torch.float32, scale=True),  # [0, 1]
        v2.Normalize(mean=list(recipe.mean), std=list(recipe.std)),
    ]
    return v2.Compose(steps)


class TwoViews:
    """PIL image -> (view1, view2), each drawn independently (v1/v2: from one recipe, v3: from two)."""

    def __init__(self, recipe: Recipe, size: int) -> None:
        self.first = view_transform(recipe.view1, recipe, size)
        self.second = view_transform(recipe.view2, recipe, size)

    def __call__(self, image: Image.Image) -> tuple[torch.Tensor, torch.Tensor]:
        return self.first(image), self.second(image)


def eval_transform(recipe: Recipe, size: int) -> v2.Compose:
    """PIL image -> float 3 x size x size, normalised: for size <= 32 the image is only brought to size x size
    (CIFAR stays untouched); larger sizes resize the short side to round(256/224 * size) and centre-crop."""
    resize = size if size <= 32 else round(size * 256 / 224)
    return v2.Compose(
        [
            v2.Resize(resize, interpolation=InterpolationMode.BILINEAR),
            v2.CenterCrop(size),
            v2.PILToTensor(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=list(recipe.mean), std=list(recipe.std)),
        ]
    )
