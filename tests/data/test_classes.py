"""data.classes: a task of a few classes of a labelled dataset, in every split, for folders, archives-like file
sources and named (in-memory) datasets alike."""

from pathlib import Path

import numpy as np
import pytest

from mocokit.config.loader import ConfigError
from mocokit.data import DataConfig, DataError, build_eval_dataset
from mocokit.data.sources import open_source
from mocokit.training.run_config import load_config

from .conftest import CLASSES


def test_a_folders_splits_keep_only_the_chosen_classes_renumbered(split_folder: Path) -> None:
    chosen = [CLASSES[2], CLASSES[0]]  # the dataset's class order wins over the order given
    cfg = DataConfig(path=str(split_folder), classes=chosen)
    train, test = open_source(cfg, "train"), open_source(cfg, "test")
    assert train.classes == test.classes == [CLASSES[0], CLASSES[2]]
    assert (len(train), len(test)) == (8, 4) and sorted(set(train.labels)) == [0, 1]
    everything = open_source(DataConfig(path=str(split_folder)), "train")
    for path, label in zip(train.paths, train.labels):  # each kept image keeps its own class, renumbered
        assert everything.classes[everything.labels[everything.paths.index(path)]] == train.classes[label]
        assert path.split("/")[-2] == train.classes[label]
    assert np.array_equal(np.asarray(train.read(5)),
                          np.asarray(everything.read(everything.paths.index(train.paths[5]))))
    dataset = build_eval_dataset(cfg, "test")  # what evaluation and the kNN monitor read
    assert len(dataset) == 4 and list(dataset.classes) == [CLASSES[0], CLASSES[2]]


def test_a_named_datasets_pixels_are_selected_without_a_copy(tmp_path: Path, fake_cifar10) -> None:
    pixels = fake_cifar10(tmp_path)
    full = open_source(DataConfig(path="cifar10", root=str(tmp_path)), "train")
    cfg = DataConfig(path="cifar10", root=str(tmp_path), classes=["class3", "class7"])
    train = open_source(cfg, "train")
    kept = [i for i, label in enumerate(full.labels) if label in (3, 7)]
    assert train.paths == [full.paths[i] for i in kept] and train.labels == [int(full.labels[i] == 7) for i in kept]
    assert train.square_size() == 32  # the batched augmentation still sees one square size
    assert all(np.array_equal(np.asarray(train.read(n)), pixels[i]) for n, i in enumerate(kept))


def test_unknown_classes_unlabelled_data_and_bad_values_are_refused(split_folder: Path) -> None:
    with pytest.raises(DataError, match="no class 'zebra'.*its classes"):
        open_source(DataConfig(path=str(split_folder), classes=["zebra"]), "train")
    with pytest.raises(DataError, match="has no labels"):
        open_source(DataConfig(path=str(split_folder), labels="none", classes=[CLASSES[0]]), "train")
    with pytest.raises(ConfigError, match="data.classes"):
        load_config("demo", ["data.classes=[]"])
    with pytest.raises(ConfigError, match="data.classes"):
        load_config("demo", ["data.classes=[cat, cat]"])
    assert load_config("demo", ["data.classes=[airplane, bird]"]).data.classes == ["airplane", "bird"]
