"""mocokit's data side: dataset sources, augmentation recipes and the two augmentation backends.

See docs/data.md for the user-facing description. The engine uses:
    build_pretrain_dataset(cfg, split) -> items (views, label, index)
    build_batch_augment(cfg, device) -> callable(uint8 N x C x H x W) -> (view1, view2)   [augment="batched"]
    build_eval_dataset(cfg, split) -> items (image, label)
    available_splits(cfg), check_batch_fits(dataset, batch_size)
"""

from mocokit.data.batched import BatchAugment
from mocokit.data.config import DataConfig
from mocokit.data.datasets import (
    EvalDataset,
    PretrainDataset,
    build_batch_augment,
    build_eval_dataset,
    build_pretrain_dataset,
    check_batch_fits,
)
from mocokit.data.errors import DataError
from mocokit.data.recipes import Recipe, ViewRecipe, get_recipe, recipe_names, recipe_registry
from mocokit.data.robust import UnreadableImageWarning
from mocokit.data.sources import available_splits

__all__ = [
    "BatchAugment",
    "DataConfig",
    "DataError",
    "EvalDataset",
    "PretrainDataset",
    "Recipe",
    "UnreadableImageWarning",
    "ViewRecipe",
    "available_splits",
    "build_batch_augment",
    "build_eval_dataset",
    "build_pretrain_dataset",
    "check_batch_fits",
    "get_recipe",
    "recipe_names",
    "recipe_registry",
]
