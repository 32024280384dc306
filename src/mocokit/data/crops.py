"""RandomResizedCrop's box distribution, drawn for a whole batch at once.

Reproduces torchvision's `RandomResizedCrop` parameter sampling exactly, vectorised over N samples: up to 10
attempts of (area share ~ U(scale), log aspect ratio ~ U(log ratio)), w = round(sqrt(area * ratio)),
h = round(sqrt(area / ratio)), the first attempt that fits the image wins and its top-left corner is uniform over
the valid positions; when none fits, the centred crop of the whole image clamped to the ratio range is used.
"""

from __future__ import annotations

import math

import torch


def sample_crop_boxes(
    n: int,
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    *,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
    attempts: int = 10,
) -> torch.Tensor:
    """N x 4 float boxes (x1, y1, x2, y2) in pixel-edge coordinates with integer values: the crop covers the
    pixels [y1, y2) x [x1, x2) of a height x width image."""
    area = height * width
    rand = torch.rand(n, attempts, 4, device=device, generator=generator, dtype=torch.float64)
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
    top = torch.floor(rand[..., 2].gather(1, first).squeeze(1) * (height - h + 1))  # uniform over valid rows
    left = torch.floor(rand[..., 3].gather(1, first).squeeze(1) * (width - w + 1))

    fallback_w, fallback_h = _fallback_size(height, width, ratio)
    w = torch.where(any_fits, w, torch.full_like(w, fallback_w))
    h = torch.where(any_fits, h, torch.full_like(h, fallback_h))
    top = torch.where(any_fits, top, torch.full_like(top, (height - fallback_h) // 2))
    left = torch.where(any_fits, left, torch.full_like(left, (width - fallback_w) // 2))
    return torch.stack([left, top, left + w, top + h], dim=1).float()


def _fallback_size(height: int, width: int, ratio: tuple[float, float]) -> tuple[int, int]:
    """torchvision's fallback: the whole image, clamped to the aspect-ratio range (width, height)."""
    in_ratio = width / height
    if in_ratio < min(ratio):
        return width, round(width / min(ratio))
    if in_ratio > max(ratio):
        return round(height * max(ratio)), height
    return width, height
