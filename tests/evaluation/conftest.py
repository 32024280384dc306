"""Tiny pretraining runs, built once per session, for the evaluation tests: a CIFAR ResNet and a ViT, pretrained
for one epoch on a generated 3-class image folder (classes differ by colour, so features separate them)."""

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mocokit.engine.pretrain import pretrain
from mocokit.training.run_config import load_config

QUIET = ["train.epochs=1", "data.num_workers=0", "run.tensorboard=false", "run.progress=false",
         "monitor.knn_every_epochs=0", "train.batch_size=16",
         "train.threads=1"]  # one thread: on a shared 2-core machine two threads can be 50x slower
RESNET = ["model.width=0.125", "model.queue_size=32", "model.bn_splits=2"]
VIT = ["model.backbone=vit_tiny", "model.backbone_args={depth: 2}", "model.hidden_dim=32", "model.dim=16"]


def write_labelled_folder(root: Path, classes: int = 3, train: int = 20, test: int = 6, size: int = 32) -> Path:
    """root/{train,test}/class<c>/<n>.png: noisy images around one random colour per class."""
    rng = np.random.default_rng(0)
    colours = rng.integers(0, 256, size=(classes, 3))
    for split, count in (("train", train), ("test", test)):
        for c in range(classes):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for n in range(count):
                pixels = np.clip(colours[c] + rng.normal(0, 40, size=(size, size, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{n}.png")
    return root


@pytest.fixture(scope="session")
def labelled_images(tmp_path_factory) -> Path:
    return write_labelled_folder(tmp_path_factory.mktemp("labelled"))


def _pretrained_run(root: Path, images: Path, preset: str, extra: list[str]) -> Path:
    cfg = load_config(preset, [*QUIET, *extra, f"data.path={images}", f"run.dir={root}",
                               f"data.root={root.parent / 'data-root'}"])
    pretrain(cfg, echo=lambda _message: None)
    return root


def private_copy(run: Path, destination: Path) -> Path:
    """A copy of a session-wide run without the feature caches and evaluation outputs that other tests of the
    session may have left in it, for a test that writes or counts them."""
    shutil.copytree(run, destination, ignore=shutil.ignore_patterns("cache", "eval"))
    return destination


@pytest.fixture(scope="session")
def resnet_run(tmp_path_factory, labelled_images) -> Path:
    return _pretrained_run(tmp_path_factory.mktemp("resnet") / "run", labelled_images, "v2-cifar10", RESNET)


@pytest.fixture(scope="session")
def vit_run(tmp_path_factory, labelled_images) -> Path:
    return _pretrained_run(tmp_path_factory.mktemp("vit") / "run", labelled_images, "v3-vit-cifar10", VIT)
