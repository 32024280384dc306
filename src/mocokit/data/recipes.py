"""Augmentation recipes as data: one frozen dataclass of parameters per view, one named recipe per MoCo version.

Both augmentation backends (`per_image.py`, torchvision in DataLoader workers, and `batched.py`, a whole uint8 batch
on the training device) read the same `Recipe` object, so a recipe is defined exactly once.

Every view applies its operations in this fixed order, the order of the official code:
  RandomResizedCrop -> [grayscale if grayscale_first] -> colour jitter -> [grayscale if not grayscale_first]
  -> Gaussian blur -> solarize -> horizontal flip -> to float in [0, 1] -> normalise with mean/std.
Colour jitter applies brightness, contrast, saturation and hue in a random order drawn per image, as torchvision's
ColorJitter does.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The statistics the official MoCo CIFAR-10 demo normalises with (facebookresearch/moco, colab/moco_cifar10_demo).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)


@dataclass(frozen=True)
class ViewRecipe:
    """The random operations that turn one image into one view, with their parameters."""

    crop_scale: tuple[float, float] = (
        0.2,
        1.0,
    )  # RandomResizedCrop: range of the crop's share of the image area
    crop_ratio: tuple[float, float] = (
        3 / 4,
        4 / 3,
    )  # RandomResizedCrop: range of the crop's aspect ratio w/h
    jitter: tuple[float, float, float, float] = (
        0.4,
        0.4,
        0.4,
        0.1,
    )  # ColorJitter brightness, contrast, saturation, hue
    jitter_p: float = 0.8  # probability that the colour jitter is applied (1.0: always, as in v1)
    grayscale_p: float = 0.2  # probability of converting to grayscale (kept 3-channel)
    grayscale_first: bool = False  # v1 converts to grayscale before the jitter; v2 and v3 after
    blur_p: float = 0.0  # probability of a Gaussian blur
    blur_sigma: tuple[float, float] = (0.1, 2.0)  # blur sigma drawn uniformly from this range, in pixels
    blur_kernel_fraction: float = (
        0.1  # blur kernel side, as a share of the crop side (rounded to the nearest odd)
    )
    solarize_p: float = 0.0  # probability of solarizing (inverting pixels >= solarize_threshold)
    solarize_threshold: int = 128  # on the 0..255 scale
    flip_p: float = 0.5  # probability of a horizontal flip

    def blur_kernel_size(self, image_size: int) -> int:
        """The odd kernel side nearest to blur_kernel_fraction * image_size (at least 3)."""
        return max(3, 2 * round((self.blur_kernel_fraction * image_size - 1) / 2) + 1)


@dataclass(frozen=True)
class Recipe:
    """A named augmentation recipe: the two views of an image, the normalisation, and where it comes from."""

    name: str
    view1: ViewRecipe
    view2: ViewRecipe  # v1/v2: the same object as view1
    image_size: int  # the crop side the recipe is designed for
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    source: str  # citation: paper and official code the parameters come from
    notes: str = ""  # departures from the source, if any


_BLUR_NOTE = (
    "The official code blurs with PIL's GaussianBlur(radius=sigma), which has no fixed kernel; mocokit uses a "
    "kernel of about 10% of the crop side (23 px at 224, 9 px at 96, 7 px at 64), as SimCLR/BYOL do, so that both "
    "backends compute the same blur."
)


def _v1(name: str, size: int, small: bool) -> Recipe:
    # facebookresearch/moco main_moco.py, the default branch (not --aug-plus).
    view = ViewRecipe(jitter=(0.4, 0.4, 0.4, 0.4), jitter_p=1.0, grayscale_first=True)
    return Recipe(
        name=name,
        view1=view,
        view2=view,
        image_size=size,
        mean=CIFAR10_MEAN if small else IMAGENET_MEAN,
        std=CIFAR10_STD if small else IMAGENET_STD,
        source="MoCo v1: He et al., CVPR 2020 (arXiv:1911.05722), section 4; facebookresearch/moco main_moco.py.",
    )


def _v2(name: str, size: int, small: bool) -> Recipe:
    # facebookresearch/moco main_moco.py --aug-plus: the SimCLR-style recipe of MoCo v2.
    view = ViewRecipe(jitter_p=0.8, blur_p=0.0 if small else 0.5)
    return Recipe(
        name=name,
        view1=view,
        view2=view,
        image_size=size,
        mean=CIFAR10_MEAN if small else IMAGENET_MEAN,
        std=CIFAR10_STD if small else IMAGENET_STD,
        source="MoCo v2: Chen et al. 2020 (arXiv:2003.04297); facebookresearch/moco main_moco.py --aug-plus.",
        notes="" if small else _BLUR_NOTE,
    )


def _v3(name: str, size: int, small: bool, crop_min: float) -> Recipe:
    # facebookresearch/moco-v3 main_moco.py, augmentation1 / augmentation2 (BYOL's asymmetric pair).
    common = {"crop_scale": (crop_min, 1.0), "jitter": (0.4, 0.4, 0.2, 0.1), "jitter_p": 0.8}
    view1 = ViewRecipe(**common, blur_p=0.0 if small else 1.0)
    view2 = ViewRecipe(**common, blur_p=0.0 if small else 0.1, solarize_p=0.2)
    return Recipe(
        name=name,
        view1=view1,
        view2=view2,
        image_size=size,
        mean=CIFAR10_MEAN if small else IMAGENET_MEAN,
        std=CIFAR10_STD if small else IMAGENET_STD,
        source=(
            "MoCo v3: Chen, Xie, He, ICCV 2021 (arXiv:2104.02057); facebookresearch/moco-v3 main_moco.py "
            "(augmentation1 / augmentation2, crop min 0.08, 0.2 for ResNet-50)."
        ),
        notes="" if small else _BLUR_NOTE,
    )


def _small_note(recipe: Recipe) -> Recipe:
    note = (
        "Small-image variant (reference section 6): 32 px crops and no blur; normalised with the CIFAR-10 "
        "statistics of the official MoCo CIFAR-10 demo."
    )
    return dataclasses.replace(recipe, notes=note)


def _mid_note(recipe: Recipe) -> Recipe:
    note = (
        "64-96 px variant (STL-10, downsampled ImageNet): the blur kernel stays near 10% of the side. "
        + _BLUR_NOTE
    )
    return dataclasses.replace(recipe, notes=note)


def recipe_registry() -> dict[str, Recipe]:
    """Every named recipe, by name. Built on each call: there is no mutable module state."""
    recipes = [
        _v1("v1", 224, small=False),
        _v2("v2", 224, small=False),
        _v3("v3", 224, small=False, crop_min=0.08),
        _v3("v3-r50", 224, small=False, crop_min=0.2),
        _small_note(_v1("v1-small", 32, small=True)),
        _small_note(_v2("v2-small", 32, small=True)),
        _small_note(_v3("v3-small", 32, small=True, crop_min=0.08)),
        _mid_note(_v2("v2-96", 96, small=False)),
        _mid_note(_v3("v3-96", 96, small=False, crop_min=0.08)),
        _mid_note(_v2("v2-64", 64, small=False)),
        _mid_note(_v3("v3-64", 64, small=False, crop_min=0.08)),
    ]
    return {recipe.name: recipe for recipe in recipes}


def recipe_names() -> list[str]:
    return list(recipe_registry())


def get_recipe(name: str) -> Recipe:
    """The recipe called `name`; an unknown name is a ValueError that lists the valid ones."""
    registry = recipe_registry()
    if name not in registry:
        raise ValueError(f"data.recipe: unknown recipe {name!r}; valid recipes: {', '.join(registry)}")
    return registry[name]
