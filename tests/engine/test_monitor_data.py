"""monitor.data.path: the kNN monitor on its own labelled ImageFolder while pretraining on unlabelled images."""

import json

import numpy as np
import pytest
from PIL import Image

from mocokit.data.errors import DataError
from mocokit.engine.monitor import own_labelled_splits
from mocokit.engine.pretrain import pretrain
from mocokit.training.run_config import load_config

COLOURS = [(200, 60, 60), (60, 200, 60), (60, 60, 200)]


def write_images(folder, colour, count, rng, size=32):
    folder.mkdir(parents=True, exist_ok=True)
    for n in range(count):
        pixels = np.clip(np.array(colour) + rng.normal(0, 60, size=(size, size, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{n}.png")


def labelled(root, splits=("train", "test"), counts=(8, 3), classes=("red", "green", "blue")):
    rng = np.random.default_rng(1)
    for split, count in zip(splits, counts):
        for name, colour in zip(classes, COLOURS):
            write_images(root / split / name if split else root / name, colour, count, rng)
    return root


def unlabelled(root, count=32):
    """Images at the top of the folder: no labels."""
    rng = np.random.default_rng(2)
    root.mkdir(parents=True)
    for n in range(count):
        pixels = np.clip(np.array(COLOURS[n % 3]) + rng.normal(0, 60, size=(32, 32, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(root / f"{n}.png")
    return root


def data_config(*extra):
    return load_config("v2-cifar10", ["data.num_workers=0", *extra]).data


def test_train_and_test_folders_are_the_bank_and_the_queries(tmp_path):
    root = labelled(tmp_path / "labels")
    bank, queries, classes, what = own_labelled_splits(data_config(), str(root), seed=0)
    assert (len(bank), len(queries), classes) == (24, 9, 3) and what == f"test images of {root}"
    image, label = queries[0]
    assert tuple(image.shape) == (3, 32, 32) and 0 <= label < 3


def test_one_folder_is_split_80_20_by_a_seeded_permutation(tmp_path):
    root = labelled(tmp_path / "labels", splits=("",), counts=(10,))
    bank, queries, classes, _ = own_labelled_splits(data_config(), str(root), seed=3)
    assert (len(bank), len(queries), classes) == (24, 6, 3)
    assert sorted(bank.indices + queries.indices) == list(range(30))  # disjoint, together the whole folder
    again, _, _, _ = own_labelled_splits(data_config(), str(root), seed=3)
    other, _, _, _ = own_labelled_splits(data_config(), str(root), seed=4)
    assert again.indices == bank.indices and other.indices != bank.indices


def test_train_and_test_classes_that_differ_are_refused_naming_both(tmp_path):
    root = labelled(tmp_path / "labels")
    write_images(root / "test" / "yellow", (200, 200, 60), 2, np.random.default_rng(0))
    with pytest.raises(DataError, match=r"monitor.data.path=.*'yellow'.*same class folders") as refused:
        own_labelled_splits(data_config(), str(root), seed=0)
    assert "\n" not in str(refused.value)


TINY = ["model.width=0.125", "model.queue_size=16", "model.bn_splits=2", "train.batch_size=16", "train.epochs=1",
        "data.num_workers=0", "run.tensorboard=false", "run.progress=false", "monitor.knn_k=5", "train.threads=1",
        "monitor.health_images=0"]


def test_pretraining_on_unlabelled_images_gets_its_knn_curve_from_the_monitor_folder(tmp_path):
    images, labels = unlabelled(tmp_path / "images"), labelled(tmp_path / "labels")
    said = []
    cfg = load_config("v2-cifar10", [*TINY, f"data.path={images}", f"run.dir={tmp_path / 'run'}",
                                     f"monitor.data.path={labels}"])
    result = pretrain(cfg, echo=said.append)
    assert result.completed and result.knn_top1 is not None and result.pixel_top1 >= 0.9  # colours: separable
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    (epoch,) = [r for r in records if r["kind"] == "epoch"]
    assert epoch["knn_top1"] == result.knn_top1
    assert any(f"24 bank images, 9 test images of {labels}" in line for line in said)


def test_without_labels_no_knn_is_attempted_and_one_line_says_how_to_get_one(tmp_path):
    said = []
    cfg = load_config("v2-cifar10", [*TINY, f"data.path={unlabelled(tmp_path / 'images')}",
                                     f"run.dir={tmp_path / 'run'}"])
    result = pretrain(cfg, echo=said.append)
    assert result.completed and result.knn_top1 is None and result.baseline_top1 is None
    (line,) = [line for line in said if "kNN monitor off" in line]
    assert "monitor.data.path=DIR" in line and "\n" not in line
