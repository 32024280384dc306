import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from mocokit.data import (
    DataConfig,
    DataError,
    UnreadableImageWarning,
    build_batch_augment,
    build_eval_dataset,
    build_pretrain_dataset,
    check_batch_fits,
    get_recipe,
)


def cfg_for(path: Path, **overrides) -> DataConfig:
    values = {"path": str(path), "recipe": "v2-small", "image_size": 32, "num_workers": 0} | overrides
    return DataConfig(**values)


def test_per_image_items_are_two_normalised_views(class_folder: Path) -> None:
    ds = build_pretrain_dataset(cfg_for(class_folder))
    (first, second), label, index = ds[5]
    assert first.shape == second.shape == (3, 32, 32) and first.dtype == torch.float32
    assert not torch.equal(first, second)  # two independent draws
    assert (label, index) == (ds.labels[5], 5) and ds.classes == ["cat", "dog", "frog"]
    assert first.min() < 0 < first.max()  # normalised, not in [0, 1]


def test_batched_items_share_one_uint8_size_so_batches_collate(class_folder: Path) -> None:
    cfg = cfg_for(class_folder, augment="batched", recipe="v2-96", image_size=96, in_memory=False)
    ds = build_pretrain_dataset(cfg)
    images, _labels, _indices = next(iter(DataLoader(ds, batch_size=12)))
    # round(96 * 256 / 224); a fourth channel marks each image's extent (the class folder's images are not square)
    assert images.dtype == torch.uint8 and images.shape == (12, 4, 110, 110)
    first, second = build_batch_augment(cfg)(images)
    assert first.shape == second.shape == (12, 3, 96, 96) and first.dtype == torch.float32


def test_eval_items_use_the_eval_transform_and_labels(split_folder: Path) -> None:
    ds = build_eval_dataset(cfg_for(split_folder), "test")
    image, label = ds[3]
    assert image.shape == (3, 32, 32) and label == 1 and len(ds) == 6
    raw = np.asarray(Image.open(split_folder / ds.paths[3]).convert("RGB"), dtype=np.float32) / 255
    recipe = get_recipe("v2-small")
    expected = (
        torch.from_numpy(raw).permute(2, 0, 1) - torch.tensor(recipe.mean).view(3, 1, 1)
    ) / torch.tensor(recipe.std).view(3, 1, 1)
    assert torch.allclose(image, expected, atol=1e-5)  # 32 px: the image itself, only normalised


def test_unlabelled_images_get_label_minus_one(make_tree) -> None:
    root = make_tree({"a.png": (32, 32), "deep/er/b.jpg": (40, 40)})
    ds = build_eval_dataset(cfg_for(root), "train")
    assert [ds[i][1] for i in range(2)] == [-1, -1] and ds.classes == []


def test_images_smaller_than_the_crop_are_upsampled(make_tree) -> None:
    root = make_tree({"tiny/a.png": (5, 3), "tiny/b.png": (1, 1)})
    for augment in ("per_image", "batched"):
        cfg = cfg_for(root, recipe="v2", image_size=64, augment=augment)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = build_pretrain_dataset(cfg)
        views = ds[1][0]
        if augment == "batched":
            views = build_batch_augment(cfg)(views.unsqueeze(0))
        assert views[0].shape[-2:] == (64, 64) and torch.isfinite(views[0]).all()
    assert build_eval_dataset(cfg_for(root, image_size=64, recipe="v2-64"), "train")[0][0].shape == (
        3,
        64,
        64,
    )


def corrupt(root: Path) -> None:
    (root / "cat" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    data = (root / "dog" / "1.png").read_bytes()
    (root / "dog" / "truncated.png").write_bytes(data[: len(data) // 2])
    (root / "dog" / "notes.txt").write_text("ignored")


@pytest.mark.parametrize("in_memory", [False, True])
def test_unreadable_files_are_skipped_with_named_warnings_and_a_count(
    class_folder: Path, in_memory: bool
) -> None:
    corrupt(class_folder)
    cfg = cfg_for(class_folder, in_memory=in_memory, max_bad_fraction=0.2)

    def read_everything():
        ds = build_pretrain_dataset(cfg)
        items = [ds[i] for i in range(len(ds))]
        ds.report_unreadable()
        return ds, items

    with pytest.warns(UnreadableImageWarning) as caught:
        ds, items = read_everything()
    messages = " ".join(str(w.message) for w in caught)
    assert "broken.jpg" in messages and "truncated.png" in messages
    assert "2 of 14 images" in messages
    assert len(items) == (12 if in_memory else 14)  # streamed items are replaced by the next readable one
    assert all(ds.paths[index].endswith((".jpg", ".png")) for _, _, index in items)


def test_too_many_unreadable_files_is_an_error(class_folder: Path) -> None:
    corrupt(class_folder)
    ds = build_pretrain_dataset(cfg_for(class_folder, in_memory=False, max_bad_fraction=0.1))
    with pytest.warns(UnreadableImageWarning), pytest.raises(DataError, match="max_bad_fraction"):
        [ds[i] for i in range(len(ds))]  # reading every item is the point


def test_unreadable_flags_set_in_workers_reach_the_main_process(class_folder: Path) -> None:
    corrupt(class_folder)
    ds = build_pretrain_dataset(cfg_for(class_folder, in_memory=False, max_bad_fraction=0.5))
    for _ in DataLoader(ds, batch_size=7, num_workers=2):
        pass
    assert sorted(name.split("/")[-1] for name in ds.unreadable()) == ["broken.jpg", "truncated.png"]


def test_in_memory_is_chosen_by_the_budget(class_folder: Path) -> None:
    fits = build_pretrain_dataset(cfg_for(class_folder, memory_budget_mb=1))
    too_big = build_pretrain_dataset(cfg_for(class_folder, memory_budget_mb=0))
    assert "in memory" in fits.where and "in memory" not in too_big.where
    assert [too_big.paths[i] for i in range(12)] == fits.paths


def test_dataset_smaller_than_a_batch_says_what_to_do(class_folder: Path) -> None:
    ds = build_pretrain_dataset(cfg_for(class_folder))
    check_batch_fits(ds, 12)
    with pytest.raises(DataError, match="12 images, fewer than one batch of 64.*at most 12"):
        check_batch_fits(ds, 64)


def test_empty_class_folder_is_reported_when_building(class_folder: Path) -> None:
    (class_folder / "zebra").mkdir()
    with pytest.raises(DataError, match="'zebra'"):
        build_pretrain_dataset(cfg_for(class_folder))


def test_stl10_pretrains_on_the_unlabelled_split(tmp_path: Path) -> None:
    base = tmp_path / "stl10_binary"
    base.mkdir()
    np.zeros((4, 3, 96, 96), dtype=np.uint8).tofile(base / "unlabeled_X.bin")
    np.zeros((2, 3, 96, 96), dtype=np.uint8).tofile(base / "train_X.bin")
    np.array([1, 2], dtype=np.uint8).tofile(base / "train_y.bin")
    (base / "class_names.txt").write_text("a b c d e f g h i j")
    cfg = DataConfig(path="stl10", root=str(tmp_path), recipe="v2-96", image_size=96, augment="batched")
    pretrain, bank = build_pretrain_dataset(cfg), build_eval_dataset(cfg, "train")
    assert len(pretrain) == 4 and pretrain[0][1] == -1 and pretrain[0][0].shape == (3, 96, 96)
    assert len(bank) == 2 and bank[1][1] == 1
