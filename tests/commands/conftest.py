"""A tiny pretraining run on a real CIFAR-10 subset, built once per session, for the export and embed tests."""

from pathlib import Path

import pytest

CIFAR_ARCHIVE = Path(__file__).resolve().parents[3] / "shared" / "data" / "cifar10-jpg.tar.gz"


@pytest.fixture(scope="session")
def cifar_data(tmp_path_factory) -> list[str]:
    """Overrides that read the real CIFAR-10 archive, with a data.root shared by the session (decompressed once)."""
    if not CIFAR_ARCHIVE.is_file():
        pytest.skip(f"real CIFAR-10 archive not found at {CIFAR_ARCHIVE}")
    return [f"data.path={CIFAR_ARCHIVE}", f"data.root={tmp_path_factory.mktemp('cifar-root')}"]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, cifar_data) -> Path:
    """A finished one-epoch MoCo v2 run folder (CIFAR ResNet-18 at width 0.125, 64 images, 2 steps)."""
    from mocokit.engine.pretrain import pretrain
    from mocokit.training.run_config import load_config

    run_dir = tmp_path_factory.mktemp("tiny-run")
    cfg = load_config("v2-cifar10", [
        "model.width=0.125", "model.queue_size=48", "train.epochs=1", "data.max_images=64", "train.batch_size=32",
        "monitor.knn_every_epochs=0", "run.tensorboard=false", "run.progress=false", "data.num_workers=0",
        "data.in_memory=false", "train.threads=1", *cifar_data, f"run.dir={run_dir}",
    ])
    assert pretrain(cfg, echo=lambda _message: None).completed
    return run_dir


@pytest.fixture
def mocokit_cli(monkeypatch):
    """`mocokit_cli(*argv) -> exit status` of `mocokit.cli.main`, with the export and embed subcommands registered
    (added to cli.COMMANDS here while cli.py does not list them yet; a no-op once it does)."""
    from mocokit import cli
    from mocokit.commands import embed, export

    monkeypatch.setattr(cli, "COMMANDS", [*cli.COMMANDS, *(c for c in (export, embed) if c not in cli.COMMANDS)])
    return lambda *argv: cli.main([str(a) for a in argv])


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> Path:
    """A run of the `demo` preset as the README starts it, its model unchanged, on a generated 10-class image folder
    (6 train and 3 test images per class, noisy enough that kNN accuracies depend on the weights; data.path
    substituted) for two epochs of 3 steps: with the kNN monitor and its random-init baseline, and both
    checkpoints/last.pt and previous.pt. Copy it before damaging it."""
    import numpy as np
    from PIL import Image

    from mocokit.engine.pretrain import pretrain
    from mocokit.training.run_config import load_config

    root = tmp_path_factory.mktemp("demo-run")
    rng = np.random.default_rng(0)
    colours = rng.integers(0, 256, size=(10, 3))
    for split, count in (("train", 6), ("test", 3)):
        for c, colour in enumerate(colours):
            folder = root / "images" / split / f"class{c}"
            folder.mkdir(parents=True)
            for n in range(count):
                pixels = np.clip(colour + rng.normal(0, 100, size=(32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{n}.png")
    cfg = load_config("demo", [f"data.path={root / 'images'}", f"run.dir={root / 'runs' / 'demo'}", "train.epochs=2",
                               "train.batch_size=16", "train.threads=1", "run.tensorboard=false",
                               "run.progress=false"])
    assert pretrain(cfg, echo=lambda _message: None).completed
    return root / "runs" / "demo"
