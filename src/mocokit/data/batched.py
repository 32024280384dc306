"""The batched augmentation backend: a whole uint8 batch augmented at once on the training device.

Reads the same `Recipe` as the per-image backend and draws the same distributions, with per-sample random
parameters, but runs as a few large tensor operations (GPU when there is one; also usable on CPU):
- RandomResizedCrop: boxes from `crops.sample_crop_boxes` (torchvision's algorithm, vectorised), resampled by
  `torchvision.ops.roi_align` (bilinear at bin centres; with `sampling_ratio=-1` a downscaled crop averages
  several samples per output pixel, an antialiasing close to PIL's);
- colour jitter with torchvision's definitions of brightness, contrast and saturation (blends in float) and
  `kornia.enhance.adjust_hue` for hue, in a random order drawn per sample, each applied only to its samples;
- grayscale with torchvision's `rgb_to_grayscale`, Gaussian blur with `kornia.filters.gaussian_blur2d` (one sigma
  per sample), solarize and flip as masked tensor operations.

Randomness: every draw uses `generator` when one is given (it must live on the batch's device), else the global
torch RNG of that device, so `torch.manual_seed` makes a run repeatable.

Items of any aspect: a dataset item is the whole image fitted into a uint8 R x R square (long side R, at the top
left; `datasets.BatchItem`), with a fourth channel marking the image's extent, so that crops are drawn from the whole
image, with its own height and width, as torchvision's RandomResizedCrop draws them. Items of datasets known to hold
only square images have three channels (the image is the whole item).

Known differences from the per-image backend: colour operations run in float instead of 8-bit PIL arithmetic
(values differ by rounding, distributions do not), and crops are resampled from the item (R pixels on the image's
long side, `DataConfig.batched_source_size`), not from the image file at its full resolution.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from kornia.enhance import adjust_hue
from kornia.filters import gaussian_blur2d
from torchvision.ops import roi_align
from torchvision.transforms.v2.functional import rgb_to_grayscale

from mocokit import distributed
from mocokit.data.crops import crop_boxes, crop_uniforms
from mocokit.data.recipes import Recipe, ViewRecipe


class BatchAugment:
    """uint8 N x 3 x H x W, or N x 4 x H x W whose fourth channel marks each image's extent (`image_extent`), on the
    device -> (view1, view2), each float N x 3 x S x S normalised."""

    def __init__(self, recipe: Recipe, size: int, device: torch.device | str = "cpu") -> None:
        self.recipe = recipe
        self.size = size
        self.device = torch.device(device)
        self.mean = torch.tensor(recipe.mean, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(recipe.std, device=self.device).view(1, 3, 1, 1)

    def __call__(
        self, images: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (3, 4):
            raise ValueError(
                f"BatchAugment expects uint8 N x 3 x H x W or N x 4 x H x W, got {images.dtype} {tuple(images.shape)}"
            )
        images = images.to(self.device, non_blocking=True)
        extent = image_extent(images)
        pixels = images[:, :3].float().div_(255)  # N x 3 x H x W in [0, 1]
        first = self.view(pixels, self.recipe.view1, generator, extent)
        second = self.view(pixels, self.recipe.view2, generator, extent)
        return first, second

    def view(
        self,
        pixels: torch.Tensor,
        view: ViewRecipe,
        generator: torch.Generator | None,
        extent: tuple[int | torch.Tensor, int | torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """One augmented view of every image of a float N x 3 x H x W batch in [0, 1]; normalised N x 3 x S x S.
        extent: (heights, widths) of the images at the top left of their items (`image_extent`); None: H, W."""
        n, _, height, width = pixels.shape
        heights, widths = extent if extent is not None else (height, width)
        dev = pixels.device
        # On P processes every rank draws the decisions of the whole global batch (P·N, in the same order as one
        # process would) and keeps its own rows: the ranks' RNGs stay in step (a checkpoint holds one RNG state),
        # their images get independent augmentations, and the global batch is augmented as on one process.
        world = distributed.world_size()
        mine = slice(distributed.rank() * n, (distributed.rank() + 1) * n)

        def draw(*shape: int) -> torch.Tensor:
            return torch.rand(shape[0] * world, *shape[1:], device=dev, generator=generator)[mine]

        # Every random decision of this view, drawn up front in a fixed order (N or N x 4 each). Each crop box lies
        # inside its image's extent (heights, widths), drawn as RandomResizedCrop draws it from the whole image.
        boxes = crop_boxes(crop_uniforms(n * world, device=dev, generator=generator)[mine], heights, widths,
                           view.crop_scale, view.crop_ratio)
        jitter_on = draw(n) < view.jitter_p
        order = torch.argsort(
            draw(n, 4), dim=1
        )  # a uniformly random permutation of the 4 jitter ops per sample
        factors = self._jitter_factors(view, draw(n, 4))  # brightness, contrast, saturation, hue
        gray_on = draw(n) < view.grayscale_p
        blur_on = draw(n) < view.blur_p
        sigma = view.blur_sigma[0] + (view.blur_sigma[1] - view.blur_sigma[0]) * draw(n)
        solarize_on = draw(n) < view.solarize_p
        flip_on = draw(n) < view.flip_p

        # Work in an order where samples sharing a jitter order are contiguous, so that the jitter runs on slices
        # (views, no copies). roi_align writes the crops directly in that order; one gather restores it at the end.
        code = (
            order[:, 0] * 64 + order[:, 1] * 16 + order[:, 2] * 4 + order[:, 3]
        )  # N, one value per permutation
        code = torch.where(jitter_on, code, torch.full_like(code, -1))  # -1: jitter not applied
        perm = torch.argsort(code)  # sorted position -> original sample
        code, order, factors = code[perm], order[perm], factors[perm]
        gray_on, blur_on, sigma = gray_on[perm], blur_on[perm], sigma[perm]
        solarize_on, flip_on = solarize_on[perm], flip_on[perm]

        rois = torch.cat(
            [perm.to(boxes.dtype).unsqueeze(1), boxes[perm]], dim=1
        )  # N x 5: (image, x1, y1, x2, y2)
        x = roi_align(pixels, rois, output_size=self.size, spatial_scale=1.0, sampling_ratio=-1, aligned=True)
        # x: N x 3 x S x S in [0, 1], sorted by jitter order

        if view.grayscale_first:
            _masked_(x, gray_on, _grayscale)
        self._jitter_(x, view, code, order, factors)
        if not view.grayscale_first:
            _masked_(x, gray_on, _grayscale)
        if view.blur_p > 0:
            kernel = view.blur_kernel_size(self.size)
            sub_sigma = sigma[blur_on].unsqueeze(1).expand(-1, 2)  # M x 2: (sigma_y, sigma_x)
            _masked_(x, blur_on, lambda sub: gaussian_blur2d(sub, kernel, sub_sigma, "reflect"))
        if view.solarize_p > 0:
            threshold = view.solarize_threshold / 255
            _masked_(x, solarize_on, lambda sub: torch.where(sub >= threshold, 1.0 - sub, sub))
        _masked_(x, flip_on, lambda sub: sub.flip(-1))

        inverse = torch.argsort(perm)  # original sample -> sorted position
        out = x.index_select(0, inverse)  # N x 3 x S x S, back in the batch's order
        return out.sub_(self.mean).div_(self.std)

    @staticmethod
    def _jitter_factors(view: ViewRecipe, rand: torch.Tensor) -> torch.Tensor:
        """N x 4 factors as torchvision's ColorJitter draws them: U(max(0, 1-v), 1+v) for brightness, contrast and
        saturation, U(-v, v) for hue."""
        b, c, s, h = view.jitter
        low = rand.new_tensor([max(0.0, 1 - b), max(0.0, 1 - c), max(0.0, 1 - s), -h])
        high = rand.new_tensor([1 + b, 1 + c, 1 + s, h])
        return low + (high - low) * rand

    @staticmethod
    def _jitter_(
        x: torch.Tensor, view: ViewRecipe, code: torch.Tensor, order: torch.Tensor, factors: torch.Tensor
    ) -> None:
        """Colour jitter in place on x (N x 3 x S x S), whose samples are sorted by `code` (their jitter order)."""
        ops: list[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = [
            _brightness,
            _contrast,
            _saturation,
            _hue,
        ]
        enabled = [strength > 0 for strength in view.jitter]  # torchvision skips an op whose strength is 0
        values, counts = torch.unique_consecutive(code, return_counts=True)
        start = 0
        for value, count in zip(values.tolist(), counts.tolist()):  # at most 25 groups; one device sync
            stop = start + count
            if value >= 0:
                sub = x[start:stop]
                for op_index in order[start].tolist():
                    if enabled[op_index]:
                        sub = ops[op_index](sub, factors[start:stop, op_index])
                x[start:stop] = sub
            start = stop


def image_extent(images: torch.Tensor) -> tuple[int | torch.Tensor, int | torch.Tensor]:
    """(heights, widths) of the images inside uint8 items N x C x H x W: H and W for C = 3 (the image is the item);
    for C = 4, N each, the rows and columns where the fourth channel is non-zero (the image sits at the top left)."""
    _, channels, height, width = images.shape
    if channels == 3:
        return height, width
    inside = images[:, 3] > 0  # N x H x W
    heights = inside.any(dim=2).sum(dim=1).clamp_(min=1)  # N
    widths = inside.any(dim=1).sum(dim=1).clamp_(min=1)  # N
    return heights, widths


def _masked_(x: torch.Tensor, mask: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
    """x[i] = fn(x[i]) in place for the samples where mask (N) is true; fn only sees the chosen samples."""
    if not bool(mask.any()):
        return
    if bool(mask.all()):
        x.copy_(fn(x))
        return
    index = torch.nonzero(mask).flatten()
    x.index_copy_(0, index, fn(x.index_select(0, index)))


def _grayscale(x: torch.Tensor) -> torch.Tensor:
    return rgb_to_grayscale(x, num_output_channels=3)


# Colour operations on float M x 3 x S x S in [0, 1] with one factor per sample (M), as torchvision defines them.


def _per_sample(factor: torch.Tensor) -> torch.Tensor:
    return factor.to(torch.float32).view(-1, 1, 1, 1)


def _brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return (x * _per_sample(factor)).clamp_(0, 1)


def _contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    mean = rgb_to_grayscale(x).mean(dim=(-3, -2, -1), keepdim=True)  # M x 1 x 1 x 1
    f = _per_sample(factor)
    return (f * x + (1 - f) * mean).clamp_(0, 1)


def _saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    gray = rgb_to_grayscale(x)  # M x 1 x S x S
    f = _per_sample(factor)
    return (f * x + (1 - f) * gray).clamp_(0, 1)


def _hue(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    # torchvision's hue factor is a share of a full turn in [-0.5, 0.5]; kornia's is an angle in radians.
    return adjust_hue(x, factor.to(torch.float32) * (2 * math.pi)).clamp_(0, 1)
