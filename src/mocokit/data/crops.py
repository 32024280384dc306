"""RandomResizedCrop's box distribution, drawn for a whole batch at once.

Reproduces torchvision's `RandomResizedCrop` parameter sampling exactly, vectorised over N samples: up to 10
attempts of (area share ~ U(scale), log aspect ratio ~ U(log ratio)), w = round(sqrt(area * ratio)),
h = round(sqrt(area / ratio)), the first attempt that fits the image wins and its top-left corner is uniform over
the valid positions; when none fits, the centred crop of the whole image clamped to the ratio range is used.
The batched backend gives each image its own height and width, so a crop is drawn from the whole of a non-square
image.
"""

from __future__ import annotations

import math

import torch


def sample_crop_boxes(
    n: int,
    height: int | torch.Tensor,
    width: int | torch.Tensor,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    *,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
    attempts: int = 10,
) -> torch.Tensor:
    """N x 4 float boxes (x1, y1, x2, y2) in pixel-edge coordinates with integer values: the crop covers the
    pixels [y1, y2) x [x1, x2) of a height x width image. `height` and `width`: one size for all, or N each."""
    return crop_boxes(crop_uniforms(n, device=device, generator=generator, attempts=attempts), height, width,
                      scale, ratio)


def crop_uniforms(
    n: int, *, device: torch.device | str = "cpu", generator: torch.Generator | None = None, attempts: int = 10
) -> torch.Tensor:
    """The uniform draws behind N crops, N x attempts x 4 (float64): area share, log aspect, top, left."""
    return torch.rand(n, attempts, 4, device=device, generator=generator, dtype=torch.float64)


def crop_boxes(
    rand: torch.Tensor,
    height: int | torch.Tensor,
    width: int | torch.Tensor,
    scale: tuple[float, float],
    ratio: tuple[float, float],
) -> torch.Tensor:
    """The boxes of `sample_crop_boxes` from its uniform draws `rand` (N x attempts x 4, `crop_uniforms`), for images
    of one size (ints) or of one size each (N tensors): a crop of each image as a whole, whatever its aspect."""
    height, width = _sizes(height, rand), _sizes(width, rand)  # N x 1 (or scalars), float64
    area = height * width
    target_area = area * (scale[0] + (scale[1] - scale[0]) * rand[..., 0])  # N x A
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * rand[..., 1])  # N x A
    w = torch.round(torch.sqrt(target_area * aspect))  # round half to even, like Python's round()
    h = torch.round(torch.sqrt(target_area / aspect))
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)  # N x A
    first = fits.to(torch.uint8).argmax(dim=1, keepdim=True)  # index of the first attempt that fits, N x 1
    any_fits = fits.any(dim=1)  # N
    w = w.gather(1, first).squeeze(1)  # N
    h = h.gather(1, first).squeeze(1)
    height, width = height.squeeze(-1), width.squeeze(-1)  # N (or scalars)
    top = torch.floor(rand[..., 2].gather(1, first).squeeze(1) * (height - h + 1))  # uniform over valid rows
    left = torch.floor(rand[..., 3].gather(1, first).squeeze(1) * (width - w + 1))

    fallback_w, fallback_h = _fallback_size(height, width, ratio)
    w = torch.where(any_fits, w, fallback_w)
    h = torch.where(any_fits, h, fallback_h)
    top = torch.where(any_fits, top, torch.floor((height - fallback_h) / 2))
    left = torch.where(any_fits, left, torch.floor((width - fallback_w) / 2))
    return torch.stack([left, top, left + w, top + h], dim=1).float()


def _sizes(side: int | torch.Tensor, rand: torch.Tensor) -> torch.Tensor:
    """A side (int, or one per sample) as float64 on rand's device, shaped to broadcast over the attempts."""
    side = torch.as_tensor(side, dtype=torch.float64, device=rand.device)
    if side.ndim == 0:
        return side.expand(rand.shape[0], 1)
    if side.shape != (rand.shape[0],):
        raise ValueError(f"one side per sample expected ({rand.shape[0]}), got shape {tuple(side.shape)}")
    return side.unsqueeze(1)


def _fallback_size(height: torch.Tensor, width: torch.Tensor,
                   ratio: tuple[float, float]) -> tuple[torch.Tensor, torch.Tensor]:
    """torchvision's fallback: the whole image, clamped to the aspect-ratio range: (width, height), N each."""
    low, high = min(ratio), max(ratio)
    in_ratio = width / height
    narrow, wide = in_ratio < low, in_ratio > high
    fallback_w = torch.where(wide, torch.round(height * high), width)
    fallback_h = torch.where(narrow, torch.round(width / low), height)
    return fallback_w, fallback_h
