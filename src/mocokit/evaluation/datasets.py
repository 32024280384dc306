"""The labelled images of an evaluation: the training split (capped by data.max_images, then reduced to
data.label_fraction, stratified) and the test split (capped by eval.test_images), with the evaluation transform or
the supervised training augmentation."""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property

import torch
from torch.utils.data import Dataset, Subset
from torchvision.transforms import InterpolationMode, v2

from mocokit.data import DataConfig, DataError, EvalDataset, available_splits, get_recipe
from mocokit.data.labels import stratified_indices
from mocokit.data.memory import load_into_memory, wants_memory
from mocokit.data.per_image import eval_transform
from mocokit.data.sources import ArraySource, FileSource, open_source
from mocokit.data.subset import seeded_subset


class LabelledSplit:
    """A labelled split's chosen images and their transform. Choosing reads only the index of the source (names
    and labels); the images are decoded on the first use of `dataset` (into memory when data.in_memory says so and
    the whole split is chosen), so that a feature-cache hit never decodes anything."""

    def __init__(self, name: str, data: DataConfig, source: FileSource | ArraySource, indices: list[int] | None,
                 transform: Callable) -> None:
        self.name = name  # "train", "test" or "val"
        self.data = data
        self.source = source
        self.indices = indices  # positions in the full split; None: all of it
        self.transform = transform
        self.classes: list[str] = source.classes

    def __len__(self) -> int:
        return len(self.source) if self.indices is None else len(self.indices)

    @cached_property
    def dataset(self) -> Dataset:
        """Items (image float 3×S×S, label) of the chosen images."""
        source = self.source
        # Decoding into memory decodes the whole split: worth it for all of it, not for a subset (read per use).
        if self.indices is None and wants_memory(self.data.in_memory, self.data.memory_budget_mb, source):
            source = load_into_memory(source, self.data.num_workers, self.data.max_bad_fraction)
        full = EvalDataset(source, self.transform, self.data)
        return full if self.indices is None else Subset(full, self.indices)


def supervised_train_transform(data: DataConfig) -> v2.Compose:
    """The augmentation of supervised training (linear probe in full mode, fine-tuning): RandomResizedCrop (scale
    0.08-1, the official lincls) and flip; at 32 px and below, CIFAR's random crop with 4 px padding and flip (a
    random-resized crop of a 32 px image destroys too much of it). Normalised with the recipe's mean/std."""
    recipe = get_recipe(data.recipe)
    size = data.image_size
    if size <= 32:
        crop = [v2.Resize(size, interpolation=InterpolationMode.BILINEAR), v2.CenterCrop(size),
                v2.RandomCrop(size, padding=4)]
    else:
        crop = [v2.RandomResizedCrop(size, interpolation=InterpolationMode.BILINEAR)]
    return v2.Compose([
        *crop,
        v2.RandomHorizontalFlip(),
        v2.PILToTensor(),  # 3×S×S uint8
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=list(recipe.mean), std=list(recipe.std)),
    ])


def test_split_name(data: DataConfig) -> str:
    """The held-out split: test, else val. DataError when the data has neither."""
    splits = available_splits(data)
    for name in ("test", "val"):
        if name in splits:
            return name
    raise DataError(f"{data.path!r} has no test or val split (splits: {', '.join(splits)}); evaluation needs one")


SourceOpener = Callable[[DataConfig, str], "FileSource | ArraySource"]


def labelled_source(data: DataConfig, split: str) -> FileSource | ArraySource:
    """The index (names, labels) of a labelled split; DataError when it has no labels."""
    source = open_source(data, split)
    if not source.classes:
        raise DataError(f"the {split} split of {data.path!r} has no labels (class folders); evaluation needs them")
    return source


def train_split(data: DataConfig, seed: int, augment: bool = False, max_images: int | None = None,
                open_split: SourceOpener = labelled_source) -> LabelledSplit:
    """The labelled training split: a seeded subset of data.max_images images (and of `max_images`, e.g. a kNN
    bank size, when given), then the stratified data.label_fraction of it (`stratified_indices`). `augment`: the
    supervised training augmentation instead of the evaluation transform. `open_split` opens the split's index
    (`labelled_source`, or a memo of it: indexing an archive of 60,000 images takes seconds)."""
    transform = supervised_train_transform(data) if augment else eval_transform(get_recipe(data.recipe),
                                                                                 data.image_size)
    source = open_split(data, "train")
    positions = list(range(len(source)))
    for cap, salt in ((data.max_images, 0), (max_images, 1)):
        capped = seeded_subset(positions, cap, seed + salt)  # a list is a dataset of its own items
        positions = list(capped) if isinstance(capped, Subset) else positions
    if data.label_fraction is not None:
        labels = [source.labels[i] for i in positions]
        positions = [positions[i] for i in stratified_indices(labels, data.label_fraction, seed)]
    return LabelledSplit("train", data, source, None if len(positions) == len(source) else positions, transform)


def test_split(data: DataConfig, seed: int, max_images: int | None,
               open_split: SourceOpener = labelled_source) -> LabelledSplit:
    """The held-out split with the evaluation transform, a seeded subset of at most `max_images` images."""
    name = test_split_name(data)
    source = open_split(data, name)
    capped = seeded_subset(list(range(len(source))), max_images, seed + 2)
    indices = list(capped) if isinstance(capped, Subset) else None
    return LabelledSplit(name, data, source, indices, eval_transform(get_recipe(data.recipe), data.image_size))
