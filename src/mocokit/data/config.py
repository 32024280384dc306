"""The `data:` section of a mocokit config: where the images are and how the two views are made."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from mocokit.data.recipes import recipe_names

LabelMode = Literal["auto", "folders", "none"]
MAX_SIDE = 2**16  # crop and source sides: a typo beyond this is an error here, not an allocation failure later
AugmentBackend = Literal["per_image", "batched"]


@dataclass
class DataConfig:
    # A folder (ImageFolder layout, a root with train/ and test/ or val/, or unlabelled images at any depth), a
    # .tar/.tar.gz archive of one of those, or a torchvision dataset name: cifar10, cifar100, stl10.
    path: str = ""
    download: bool = False  # torchvision datasets: download when missing (never implicitly)
    recipe: str = "v2"  # augmentation recipe name (see `mocokit.data.recipes`, `mocokit recipes`)
    image_size: int = 224  # crop side of the augmented views
    num_workers: int = 2  # DataLoader worker processes for decoding and per-image augmentation
    root: str = ".data"  # torchvision downloads and the decompressed copy of .tar.gz archives live here
    labels: LabelMode = "auto"  # auto: class folders when no image sits at the top; folders: force; none: unlabelled
    in_memory: bool | None = None  # decode every image once and keep uint8 pixels in RAM; None: when it fits
    memory_budget_mb: int = 4096  # in_memory=None uses memory when the estimated decoded size is at most this
    augment: AugmentBackend = "per_image"  # per_image: torchvision in DataLoader workers; batched: on the device
    # batched: side R of the square uint8 item each image is fitted into (its long side; the whole image, aspect kept)
    # before the batch is augmented on the device; None: the images' own side when all share one square size (CIFAR,
    # STL-10), else round(S * 256 / 224)
    batched_source_size: int | None = None
    max_images: int | None = None  # pretrain on a seeded random subset of this many training images (None: all)
    max_bad_fraction: float = 0.01  # unreadable images are skipped with a warning; a larger share is an error
    # Few-label evaluation (linear probe, fine-tuning, transfer): train on a stratified, seeded share of the labelled
    # training images, e.g. 0.01 or 0.1 as in the semi-supervised protocols (None: all). See mocokit.data.labels.
    label_fraction: float | None = None
    # Only the images of these classes (class folder names, or a named dataset's class names), in every split and
    # for pretraining, kNN and evaluation alike; labels are renumbered 0..len-1 in the dataset's class order. For a
    # task of a few classes, e.g. [airplane, automobile, bird, cat]. None: every class.
    classes: list[str] | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.image_size <= MAX_SIDE:
            raise ValueError(f"data.image_size must be between 1 and {MAX_SIDE}, got {self.image_size}")
        if self.num_workers < 0:
            raise ValueError(f"data.num_workers must be >= 0, got {self.num_workers}")
        if self.memory_budget_mb < 0:
            raise ValueError(f"data.memory_budget_mb must be >= 0, got {self.memory_budget_mb}")
        if self.batched_source_size is not None and not 1 <= self.batched_source_size <= MAX_SIDE:
            raise ValueError(f"data.batched_source_size must be between 1 and {MAX_SIDE} or null, got "
                             f"{self.batched_source_size}")
        if self.max_images is not None and self.max_images < 1:
            raise ValueError(f"data.max_images must be >= 1 or null, got {self.max_images}")
        if self.label_fraction is not None and not 0.0 < self.label_fraction <= 1.0:
            raise ValueError(f"data.label_fraction must be in (0, 1] or null, got {self.label_fraction}")
        if not 0.0 <= self.max_bad_fraction <= 1.0:
            raise ValueError(f"data.max_bad_fraction must be in [0, 1], got {self.max_bad_fraction}")
        if self.labels not in ("auto", "folders", "none"):
            raise ValueError(f"data.labels must be one of auto, folders, none; got {self.labels!r}")
        if self.augment not in ("per_image", "batched"):
            raise ValueError(f"data.augment must be per_image or batched, got {self.augment!r}")
        if self.recipe not in recipe_names():
            raise ValueError(
                f"data.recipe: unknown recipe {self.recipe!r}; valid recipes: {', '.join(recipe_names())}"
            )
        if not self.root:
            raise ValueError("data.root must be a folder path, got an empty string")
        if self.classes is not None and (not self.classes or len(set(self.classes)) != len(self.classes)):
            raise ValueError(f"data.classes must be a non-empty list of distinct class names or null, got "
                             f"{self.classes}")
