import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest

from mocokit.data import DataConfig, DataError, available_splits
from mocokit.data.sources import open_source


def make_archive(folder: Path, archive: Path) -> Path:
    mode = "w:gz" if archive.name.endswith(".gz") else "w"
    with tarfile.open(archive, mode) as tar:
        tar.add(folder, arcname=folder.name)  # wrapped in one top folder, like the CIFAR archive
    return archive


CLASSES = ["cat", "dog", "frog"]  # the classes of the class_folder fixture


def test_folder_in_imagefolder_layout(class_folder: Path) -> None:
    source = open_source(DataConfig(path=str(class_folder)), "train")
    assert len(source) == 12 and source.classes == CLASSES
    assert source.read(0).mode == "RGB" and source.paths[0] == "cat/0.jpg"


def test_root_with_splits(split_folder: Path) -> None:
    cfg = DataConfig(path=str(split_folder))
    assert available_splits(cfg) == ["train", "test"]
    assert len(open_source(cfg, "test")) == 6
    with pytest.raises(DataError, match="split 'val' not found"):
        open_source(cfg, "val")


@pytest.mark.parametrize("suffix", [".tar", ".tar.gz"])
def test_archive_reads_the_same_images_as_the_folder(split_folder: Path, tmp_path: Path, suffix: str) -> None:
    archive = make_archive(split_folder, tmp_path / f"data{suffix}")
    cfg = DataConfig(path=str(archive), root=str(tmp_path / "cache"))
    from_tar, from_folder = (
        open_source(cfg, "train"),
        open_source(DataConfig(path=str(split_folder)), "train"),
    )
    assert available_splits(cfg) == ["train", "test"]
    assert [p.split("/", 1)[1] for p in from_tar.paths] == from_folder.paths
    assert from_tar.labels == from_folder.labels
    assert np.array_equal(np.asarray(from_tar.read(5)), np.asarray(from_folder.read(5)))
    cached = list((tmp_path / "cache").rglob("*.tar"))
    assert len(cached) == (1 if suffix == ".tar.gz" else 0)  # only compressed archives are decompressed


def test_tar_gz_is_decompressed_once_and_keyed_by_the_archive(split_folder: Path, tmp_path: Path) -> None:
    archive = make_archive(split_folder, tmp_path / "data.tar.gz")
    cfg = DataConfig(path=str(archive), root=str(tmp_path / "cache"))
    open_source(cfg, "train")
    (copy,) = (tmp_path / "cache").rglob("*.tar")
    stamp = copy.stat().st_mtime_ns
    open_source(cfg, "test")
    assert copy.stat().st_mtime_ns == stamp  # reused, not rewritten
    os.utime(archive, ns=(stamp + 10**9, stamp + 10**9))  # a changed archive gets a new copy
    open_source(cfg, "train")
    assert len(list((tmp_path / "cache").rglob("*.tar"))) == 2


def test_fake_cifar10_in_torchvision_format(tmp_path: Path, fake_cifar10) -> None:
    train_pixels = fake_cifar10(tmp_path)
    cfg = DataConfig(path="cifar10", root=str(tmp_path))
    train, test = open_source(cfg, "train"), open_source(cfg, "test")
    assert (len(train), len(test)) == (20, 4)
    assert train.classes[:2] == ["class0", "class1"] and 0 <= train.labels[0] < 10
    assert np.array_equal(np.asarray(train.read(7)), train_pixels[7])


def test_cifar_pickle_that_would_run_code_is_refused(tmp_path: Path, fake_cifar10) -> None:
    fake_cifar10(tmp_path)

    class Exploit:
        def __reduce__(self):  # unpickling would call os.system
            return (os.system, ("echo owned",))

    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as file:
        pickle.dump({"data": Exploit(), "labels": []}, file, protocol=2)
    with pytest.raises(DataError, match="not a CIFAR batch"):
        open_source(DataConfig(path="cifar10", root=str(tmp_path)), "test")


def test_missing_named_dataset_says_to_download(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="data.download=true"):
        open_source(DataConfig(path="cifar100", root=str(tmp_path)), "train")


def test_fake_stl10_binary_layout(tmp_path: Path) -> None:
    base = tmp_path / "stl10_binary"
    base.mkdir()
    rng = np.random.default_rng(1)
    hwc = rng.integers(0, 256, (3, 96, 96, 3), dtype=np.uint8)
    hwc.transpose(0, 3, 2, 1).tofile(base / "unlabeled_X.bin")  # stored N x 3 x W x H (column-major images)
    hwc[:2].transpose(0, 3, 2, 1).tofile(base / "train_X.bin")
    np.array([1, 10], dtype=np.uint8).tofile(base / "train_y.bin")  # 1-based labels
    (base / "class_names.txt").write_text("\n".join(f"c{i}" for i in range(10)))
    cfg = DataConfig(path="stl10", root=str(tmp_path))
    unlabeled, train = open_source(cfg, "unlabeled"), open_source(cfg, "train")
    assert np.array_equal(np.asarray(unlabeled.read(2)), hwc[2])
    assert unlabeled.labels == [-1, -1, -1] and train.labels == [0, 9]
    assert len(open_source(cfg, "train+unlabeled")) == 5


def test_path_that_is_nothing_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="neither a folder"):
        open_source(DataConfig(path=str(tmp_path / "nope")), "train")
    with pytest.raises(DataError, match="data.path is empty"):
        open_source(DataConfig(), "train")


def test_each_kind_of_data_path_is_recognised_by_its_registry_entry(tmp_path):
    from mocokit.data import DataConfig, DataError
    from mocokit.data.sources import source_kind

    (tmp_path / "folder").mkdir()
    assert source_kind(DataConfig(path="cifar10")).name == "named"
    assert source_kind(DataConfig(path=str(tmp_path / "images.tar.gz"))).name == "archive"
    assert source_kind(DataConfig(path=str(tmp_path / "folder"))).name == "folder"
    with pytest.raises(DataError, match="neither a folder"):
        source_kind(DataConfig(path=str(tmp_path / "missing")))
    with pytest.raises(DataError, match="data.download=true only applies"):
        source_kind(DataConfig(path=str(tmp_path / "folder"), download=True))
