"""The datasets the engine uses: pretraining items (two views or one uint8 image) and evaluation items.

`build_pretrain_dataset(cfg, split)[i] == (views, label, index)`:
- augment="per_image": views = (view1, view2), float 3 x S x S each, normalised with the recipe's mean/std;
- augment="batched": views = one uint8 C x R x R tensor (R fixed per dataset, so batches collate): the whole image
  fitted into the square with a fourth channel marking its extent (C = 4), or, for datasets known to hold only square
  images, the image itself (C = 3); see `BatchItem`. The engine then calls `build_batch_augment(cfg, device)` on the
  batch.
`label` is the class index (-1 when unlabelled); pretraining must not use it, it is there for monitoring.
`index` is the dataset index of the image actually returned: i, or the next readable item when i is unreadable.

`build_eval_dataset(cfg, split)[i] == (image, label)`: float 3 x S x S, the evaluation transform.
Both datasets expose `classes`, `paths` (each item's source name), `labels`, `unreadable()` and `report_unreadable()`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

from mocokit.data.batched import BatchAugment
from mocokit.data.config import DataConfig
from mocokit.data.errors import DataError
from mocokit.data.memory import load_into_memory, wants_memory
from mocokit.data.per_image import TwoViews, eval_transform
from mocokit.data.recipes import get_recipe
from mocokit.data.robust import SkippingReader
from mocokit.data.sources import ArraySource, FileSource, open_source


class _SourceDataset(Dataset):
    """Shared part: a source read through a SkippingReader, and a transform of the PIL image."""

    def __init__(
        self, source: FileSource | ArraySource, transform: Callable[[Image.Image], Any], cfg: DataConfig
    ):
        self.source = source
        self.transform = transform
        self.reader = SkippingReader(source, cfg.max_bad_fraction)

    def __len__(self) -> int:
        return len(self.source)

    @property
    def classes(self) -> list[str]:
        return self.source.classes

    @property
    def paths(self) -> list[str]:
        return self.source.paths

    @property
    def labels(self) -> list[int]:
        return self.source.labels

    @property
    def where(self) -> str:
        return self.source.where

    def unreadable(self) -> list[str]:
        """Names of the images skipped so far because they could not be decoded (seen from every worker)."""
        return self.reader.unreadable()

    def report_unreadable(self) -> int:
        """Call at the end of an epoch: warns with the count of skipped images, raises DataError if too many."""
        return self.reader.report()


class PretrainDataset(_SourceDataset):
    """Items (views, label, index); see the module docstring."""

    def __getitem__(self, index: int) -> tuple[Any, int, int]:
        image, actual = self.reader.read(index)
        return self.transform(image), self.source.labels[actual], actual


class EvalDataset(_SourceDataset):
    """Items (image float 3 x S x S normalised, label); label -1 when unlabelled."""

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, label, _ = self.read(index)
        return image, label

    def read(self, index: int) -> tuple[torch.Tensor, int, int]:
        """(image, label, j): item j is `index`, or the next readable item when `index` is unreadable. For callers
        that must not take one image for another (features saved next to a file's path)."""
        image, actual = self.reader.read(index)
        return self.transform(image), self.source.labels[actual], actual


class BatchItem:
    """PIL image -> the uint8 item of the batched backend, C x R x R: the whole image resized (bilinear, antialiased,
    aspect kept) so that its long side is R, at the top left of the square. With `extent` (C = 4) the fourth channel
    is 255 over the image and 0 elsewhere, and the rest of the square repeats the image's last row and column (so that
    bilinear samples at the image's edge see no foreign pixels); BatchAugment draws each crop inside that extent, from
    the whole image. Without it (C = 3) every image must be square: the item is the image at R x R.

    A non-square image thus keeps R pixels on its long side (a 4:3 photo at R = 256: 256 x 192); raise
    `data.batched_source_size` to keep more detail on the short side."""

    def __init__(self, side: int, extent: bool = True) -> None:
        self.side = side
        self.extent = extent

    def __call__(self, image: Image.Image) -> torch.Tensor:
        side, (width, height) = self.side, image.size
        if not self.extent and width != height:
            raise ValueError(f"a {width}x{height} image in a dataset of square items: use BatchItem(extent=True)")
        if (width, height) != (side, side):
            scale = side / max(width, height)
            size = [max(1, round(height * scale)), max(1, round(width * scale))]  # [h, w], the long side R
            image = F.resize(image, size, interpolation=InterpolationMode.BILINEAR)
        pixels = np.array(image, dtype=np.uint8)  # h x w x 3
        if not self.extent:
            return torch.from_numpy(pixels).permute(2, 0, 1).contiguous()  # 3 x R x R
        h, w = pixels.shape[:2]
        item = np.empty((side, side, 4), dtype=np.uint8)
        item[..., :3] = np.pad(pixels, ((0, side - h), (0, side - w), (0, 0)), mode="edge")
        item[..., 3] = 0
        item[:h, :w, 3] = 255
        return torch.from_numpy(item).permute(2, 0, 1).contiguous()  # 4 x R x R


def prepared_source(cfg: DataConfig, split: str) -> FileSource | ArraySource:
    """The images of a split, decoded into memory when `data.in_memory` says so (None: when they fit the budget)."""
    source = open_source(cfg, split)
    if wants_memory(cfg.in_memory, cfg.memory_budget_mb, source):
        source = load_into_memory(source, cfg.num_workers, cfg.max_bad_fraction)
    return source


def batched_source_size(cfg: DataConfig, source: FileSource | ArraySource) -> int:
    """R, the side of the uint8 items of the batched backend, which holds each image's long side (see
    `DataConfig.batched_source_size`)."""
    if cfg.batched_source_size is not None:
        return cfg.batched_source_size
    if isinstance(source, ArraySource) and source.square_size() is not None:
        return int(source.square_size())
    return cfg.image_size if cfg.image_size <= 32 else round(cfg.image_size * 256 / 224)


def build_pretrain_dataset(cfg: DataConfig, split: str = "train") -> PretrainDataset:
    """The pretraining dataset of `split`; items as in the module docstring."""
    recipe = get_recipe(cfg.recipe)
    _warn_size_mismatch(cfg, recipe.image_size)
    source = prepared_source(cfg, _pretrain_split(cfg, split))
    if cfg.augment == "per_image":
        transform: Callable[[Image.Image], Any] = TwoViews(recipe, cfg.image_size)
    else:
        # three channels only where every image is known to be square without reading them (CIFAR, STL-10, in memory)
        all_square = isinstance(source, ArraySource) and source.square_size() is not None
        transform = BatchItem(batched_source_size(cfg, source), extent=not all_square)
    return PretrainDataset(source, transform, cfg)


def build_eval_dataset(cfg: DataConfig, split: str) -> EvalDataset:
    """The evaluation dataset of `split` (kNN bank: "train", queries: "test"); items (image, label)."""
    recipe = get_recipe(cfg.recipe)
    return EvalDataset(prepared_source(cfg, split), eval_transform(recipe, cfg.image_size), cfg)


def build_batch_augment(cfg: DataConfig, device: torch.device | str = "cpu") -> BatchAugment:
    """The batched backend for `cfg.recipe`: `augment(uint8 N x C x R x R, generator=None) -> (view1, view2)`.

    Random parameters are drawn per sample from `generator` when given, else from the global RNG of `device`."""
    return BatchAugment(get_recipe(cfg.recipe), cfg.image_size, device)


def check_batch_fits(dataset: Dataset, batch_size: int, drop_last: bool = True) -> None:
    """Raise DataError when `dataset` cannot fill one batch (with drop_last, an epoch would have no step)."""
    n = len(dataset)  # type: ignore[arg-type]
    if drop_last and n < batch_size:
        where = getattr(dataset, "where", "the dataset")
        raise DataError(
            f"{where} has {n} images, fewer than one batch of {batch_size}: an epoch would have no step. "
            f"Set train.batch_size to at most {n}, or add images."
        )


def _pretrain_split(cfg: DataConfig, split: str) -> str:
    # STL-10 is pretrained on its 100,000 unlabelled images (its 5,000 labelled ones serve the kNN monitor).
    if cfg.path == "stl10" and split == "train":
        return "unlabeled"
    return split


def _warn_size_mismatch(cfg: DataConfig, recipe_size: int) -> None:
    # A 32 px recipe has no blur; a 224 px one blurs: using either at the other's size is most likely a mistake.
    if (recipe_size <= 32) != (cfg.image_size <= 32):
        warnings.warn(
            f"data.recipe={cfg.recipe!r} is designed for {recipe_size} px crops but data.image_size="
            f"{cfg.image_size}; pick a recipe for that size (e.g. v2-small for 32 px, v2-96 for 96 px)",
            stacklevel=3,
        )
