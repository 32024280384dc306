"""Fixtures for the data tests: small image trees written with PIL in a temporary folder."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CLASSES = ("cat", "dog", "frog")


def write_image(path: Path, size: tuple[int, int] = (40, 30), seed: int = 0, fmt: str | None = None) -> Path:
    """A random RGB image of size (width, height), saved in the format its suffix names."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path, format=fmt)
    return path


@pytest.fixture
def make_tree(tmp_path: Path) -> Callable[..., Path]:
    """make_tree(layout) -> root; layout maps relative paths to sizes (width, height), e.g. {"cat/0.png": (32, 32)}."""

    def make(layout: dict[str, tuple[int, int]], name: str = "tree") -> Path:
        root = tmp_path / name
        for i, (relative, size) in enumerate(sorted(layout.items())):
            write_image(root / relative, size, seed=i)
        return root

    return make


@pytest.fixture
def class_folder(make_tree: Callable[..., Path]) -> Path:
    """ImageFolder layout: 3 classes x 4 images of mixed sizes and formats."""
    layout = {}
    for c, name in enumerate(CLASSES):
        for i in range(4):
            suffix = ".png" if i % 2 else ".jpg"
            layout[f"{name}/{i}{suffix}"] = (32 + 8 * i, 24 + 4 * c)
    return make_tree(layout, "classes")


@pytest.fixture
def split_folder(make_tree: Callable[..., Path]) -> Path:
    """A root with train/ (3 classes x 4) and test/ (3 classes x 2) of 32 x 32 images."""
    layout = {f"train/{name}/{i}.png": (32, 32) for name in CLASSES for i in range(4)}
    layout |= {f"test/{name}/{i}.png": (32, 32) for name in CLASSES for i in range(2)}
    return make_tree(layout, "splits")


@pytest.fixture
def fake_cifar10() -> Callable[[Path], np.ndarray]:
    """fake_cifar10(root) writes a small fake CIFAR-10 under root and returns its train pixels N x 32 x 32 x 3."""
    return _write_fake_cifar10


def _write_fake_cifar10(root: Path, per_batch: int = 4) -> np.ndarray:
    """CIFAR-10 in torchvision's python format (pickled batches) with random pixels; returns the train pixels."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    train = []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, per_batch)]
        with open(folder / name, "wb") as file:
            pickle.dump({"data": data, "labels": labels, "batch_label": name}, file, protocol=2)
        if name != "test_batch":
            train.append(data)
    with open(folder / "batches.meta", "wb") as file:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, file, protocol=2)
    return np.concatenate(train).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
