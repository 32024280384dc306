"""Non-square images in the batched backend (issue 14, "Bad input"): crops come from the whole image, as
torchvision's RandomResizedCrop (the per-image backend) takes them, not from its centre square.

Statistics use fixed seeds and 5-standard-error tolerances (as tests/data/test_distributions.py): a correct
implementation fails with probability below 1e-6 per comparison and, the seeds being fixed, never flakes.
"""

import dataclasses
import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from mocokit.data import BatchAugment, DataConfig, build_batch_augment, build_pretrain_dataset, get_recipe
from mocokit.data.batched import image_extent
from mocokit.data.crops import crop_boxes, crop_uniforms
from mocokit.data.datasets import BatchItem
from mocokit.data.per_image import view_transform

SIGMAS = 5.0
RATIO = (3 / 4, 4 / 3)


def assert_same_mean(a: np.ndarray, b: np.ndarray, what: str) -> None:
    se = math.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b)) + 1e-12
    assert abs(a.mean() - b.mean()) < SIGMAS * se + 1e-6, f"{what}: {a.mean():.4f} vs {b.mean():.4f} (se {se:.4f})"


def torchvision_boxes(n: int, height: int, width: int, scale: tuple) -> np.ndarray:
    """The independent reference: torchvision's own RandomResizedCrop parameters, n x (top, left, h, w)."""
    crop, image = v2.RandomResizedCrop(8, scale=scale, ratio=RATIO), torch.zeros(1, height, width)
    return np.array([[p["top"], p["left"], p["height"], p["width"]] for p in (crop.make_params([image])
                                                                              for _ in range(n))], dtype=float)


def box_stats(b: np.ndarray, height: int, width: int) -> dict[str, np.ndarray]:
    """Per box (top, left, h, w) of a height x width image: the statistics compared between samplers."""
    centre_x = (b[:, 1] + b[:, 3] / 2) / width
    return {"area share": b[:, 2] * b[:, 3] / (height * width), "log aspect": np.log(b[:, 3] / b[:, 2]),
            "centre x": centre_x, "centre y": (b[:, 0] + b[:, 2] / 2) / height,
            "distance of the centre x from the middle": np.abs(centre_x - 0.5),
            "reaches the left quarter": (b[:, 1] < width / 4).astype(float)}


@pytest.mark.parametrize("scale", [(0.2, 1.0), (0.08, 1.0)])
def test_one_batch_of_mixed_sizes_crops_each_image_as_torchvision_does(scale):
    sizes = [(32, 64), (64, 32), (48, 48), (8, 80)]  # (height, width): 2:1, 1:2, square, 1:10 (fallbacks happen)
    n = 3000
    heights = torch.tensor([h for h, _ in sizes]).repeat(n)  # interleaved: every size in every part of the batch
    widths = torch.tensor([w for _, w in sizes]).repeat(n)
    boxes = crop_boxes(crop_uniforms(n * len(sizes), generator=torch.Generator().manual_seed(1)), heights, widths,
                       scale, RATIO).double().numpy()
    torch.manual_seed(0)
    for k, (height, width) in enumerate(sizes):
        mine = boxes[k::len(sizes)]
        ours = np.stack([mine[:, 1], mine[:, 0], mine[:, 3] - mine[:, 1], mine[:, 2] - mine[:, 0]], axis=1)
        ref = torchvision_boxes(n, height, width, scale)
        assert (ours[:, :2] >= 0).all() and (ours[:, 2:] >= 1).all()
        assert (ours[:, 0] + ours[:, 2] <= height).all() and (ours[:, 1] + ours[:, 3] <= width).all()
        expected = box_stats(ref, height, width)
        for name, values in box_stats(ours, height, width).items():
            assert_same_mean(values, expected[name], f"{height}x{width} {name}")


# ------------------------------------------------------------------- end to end: pixels of a 2:1 image


def crop_only(scale=(0.2, 1.0)):
    """v2-small with nothing but its random resized crop: no colour operation, no flip."""
    base = get_recipe("v2-small")
    view = dataclasses.replace(base.view1, crop_scale=scale, crop_ratio=RATIO, jitter_p=0.0, grayscale_p=0.0,
                               flip_p=0.0)
    return dataclasses.replace(base, view1=view, view2=view), view


def ramp_image(width: int = 128, height: int = 64) -> Image.Image:
    """Red encodes the column, green the row ((index + 0.5) / side, 8-bit): a view's mean red is its crop's centre x
    as a share of the image width, its lowest red how far left it reaches."""
    x = np.round(255 * (np.arange(width) + 0.5) / width)
    y = np.round(255 * (np.arange(height) + 0.5) / height)
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[..., 0] = x[None, :]
    pixels[..., 1] = y[:, None]
    pixels[..., 2] = 128
    return Image.fromarray(pixels)


def view_stats(views: torch.Tensor) -> dict[str, np.ndarray]:
    """views N x 3 x S x S in [0, 1] -> per view: centre x and y (shares of the image's sides), lowest red."""
    red, green = views[:, 0].flatten(1).double(), views[:, 1].flatten(1).double()
    return {"centre x": red.mean(1).numpy(), "centre y": green.mean(1).numpy(),
            "reaches the left quarter": (red.min(1).values < 0.25).double().numpy(),
            "reaches the right quarter": (red.max(1).values > 0.75).double().numpy(),
            "width share": (red.max(1).values - red.min(1).values).numpy()}


def test_batched_views_of_a_2_to_1_image_come_from_its_whole_width_as_per_image_views_do():
    recipe, view = crop_only()
    image, n, size = ramp_image(), 3000, 16
    unnormalise = (torch.tensor(recipe.std).view(1, 3, 1, 1), torch.tensor(recipe.mean).view(1, 3, 1, 1))
    item = BatchItem(64)(image)  # the whole 128 x 64 image fitted into 64 x 64 (64 x 32 of it), with its extent
    batch = item.unsqueeze(0).expand(n, -1, -1, -1).contiguous()
    batched = BatchAugment(recipe, size)(batch, generator=torch.Generator().manual_seed(1))[0]
    batched = batched * unnormalise[0] + unnormalise[1]
    torch.manual_seed(0)
    transform = view_transform(view, recipe, size)
    per_image = torch.stack([transform(image) for _ in range(n)]) * unnormalise[0] + unnormalise[1]
    ours, reference = view_stats(batched), view_stats(per_image)
    for name in ours:
        assert_same_mean(ours[name], reference[name], name)
    # the centre square of a 2:1 image spans x in [0.25, 0.75]: crops from the whole image reach both sides often
    assert ours["reaches the left quarter"].mean() > 0.3 and ours["reaches the right quarter"].mean() > 0.3
    assert ours["centre x"].min() < 0.3 and ours["centre x"].max() > 0.7


# ------------------------------------------------------------------------- the items of the batched backend


@pytest.mark.parametrize(("width", "height", "content"), [(128, 64, (32, 64)), (30, 90, (64, 21)), (5, 3, (38, 64))])
def test_an_item_holds_the_whole_image_at_the_top_left_with_its_extent(width, height, content):
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    item = BatchItem(64)(image)
    assert item.shape == (4, 64, 64) and item.dtype == torch.uint8
    h, w = content
    heights, widths = image_extent(item.unsqueeze(0))
    assert (int(heights), int(widths)) == (h, w)
    expected = np.asarray(image.resize((w, h), Image.BILINEAR)) if (w, h) != (width, height) else np.asarray(image)
    assert np.abs(item[:3, :h, :w].permute(1, 2, 0).numpy().astype(int) - expected.astype(int)).max() <= 1
    # the padding repeats the last column and row: a bilinear sample at the image's edge sees only the image
    assert torch.equal(item[:3, :h, w:], item[:3, :h, w - 1:w].expand(-1, -1, 64 - w))
    assert torch.equal(item[:3, h:, :], item[:3, h - 1:h, :].expand(-1, 64 - h, -1))


def test_square_images_give_the_same_views_with_or_without_the_extent_channel():
    # file folders of square images now travel as 4-channel items: their views must not change (bit for bit)
    recipe = get_recipe("v2")
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)) for _ in range(6)]
    plain = torch.stack([BatchItem(40, extent=False)(im) for im in images])
    marked = torch.stack([BatchItem(40)(im) for im in images])
    assert plain.shape[1] == 3 and marked.shape[1] == 4 and torch.equal(marked[:, :3], plain)
    augment = BatchAugment(recipe, 32)
    a = augment(plain, generator=torch.Generator().manual_seed(5))
    b = augment(marked, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_a_folder_of_mixed_aspects_gives_marked_items_and_an_in_memory_square_set_plain_ones(make_tree):
    root = make_tree({"a.png": (80, 40), "b.png": (40, 80), "c.png": (50, 50)})
    for in_memory in (False, True):
        cfg = DataConfig(path=str(root), recipe="v2-small", image_size=32, num_workers=0, augment="batched",
                         in_memory=in_memory)
        dataset = build_pretrain_dataset(cfg)
        items, _, indices = next(iter(DataLoader(dataset, batch_size=3)))
        assert items.shape == (3, 4, 32, 32)
        extents = {dataset.paths[i]: (int(h), int(w)) for i, h, w in zip(indices, *image_extent(items))}
        assert extents == {"a.png": (16, 32), "b.png": (32, 16), "c.png": (32, 32)}
        first, second = build_batch_augment(cfg)(items)
        assert first.shape == second.shape == (3, 3, 32, 32) and torch.isfinite(first).all()
    square = make_tree({f"{i}.png": (24, 24) for i in range(3)}, "square")
    cfg = DataConfig(path=str(square), recipe="v2-small", image_size=32, num_workers=0, augment="batched",
                     in_memory=True)
    items = next(iter(DataLoader(build_pretrain_dataset(cfg), batch_size=3)))[0]
    assert items.shape == (3, 3, 24, 24)  # every image known square in memory: its own side, three channels


def test_ranks_crop_their_own_images_of_mixed_extents_as_one_process_crops_the_global_batch(monkeypatch):
    from mocokit import distributed

    rng = np.random.default_rng(0)
    sides = [(40, 20), (20, 40), (30, 30), (40, 10), (12, 40), (40, 40)]  # (width, height) of the global batch
    items = torch.stack([BatchItem(40)(Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)))
                         for w, h in sides])
    augment = BatchAugment(get_recipe("v2-small"), 16)
    whole = augment(items, generator=torch.Generator().manual_seed(4))
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    halves = []
    for rank in (0, 1):
        monkeypatch.setattr(distributed, "rank", lambda rank=rank: rank)
        halves.append(augment(items[3 * rank:3 * rank + 3], generator=torch.Generator().manual_seed(4)))
    for v in (0, 1):
        torch.testing.assert_close(torch.cat([halves[0][v], halves[1][v]]), whole[v], rtol=0, atol=0)
