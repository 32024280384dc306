"""`mocokit embed` on a run whose test split holds an unreadable image: each row's path is its own image's, an
interrupted write leaves nothing behind, and a map is drawn even without scikit-learn (issue 17)."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mocokit.cli import main

CORRUPT = "test/class1/1.png"


@pytest.fixture(scope="module")
def run_with_a_corrupt_test_image(tmp_path_factory) -> Path:
    """A two-step run (ResNet-18 at width 0.125) on 3 classes × 8 train / 2 test images of 32 px, read from the files
    (data.in_memory=false: the dataset replaces an unreadable image by the next one); test/class1/1.png is corrupt."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for split, count in (("train", 8), ("test", 2)):
        for c in range(3):
            (root / split / f"class{c}").mkdir(parents=True)
            base = rng.integers(0, 256, size=3)
            for n in range(count):
                pixels = np.clip(base + rng.normal(0, 40, size=(32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(root / split / f"class{c}" / f"{n}.png")
    (root / CORRUPT).write_bytes(b"not an image")
    run_dir = tmp_path_factory.mktemp("runs") / "run"
    assert main(["pretrain", "v2-cifar10", "model.width=0.125", "model.queue_size=8", "model.bn_splits=2",
                 "train.batch_size=8", "train.epochs=1", "data.num_workers=0", "data.in_memory=false",
                 "data.max_bad_fraction=0.5", "monitor.knn_every_epochs=0", "run.tensorboard=false",
                 "run.progress=false", "train.threads=1", f"data.path={root}", f"run.dir={run_dir}"]) == 0
    return run_dir


def test_an_unreadable_image_is_left_out_and_each_path_keeps_its_own_features(run_with_a_corrupt_test_image,
                                                                               tmp_path, capsys):
    from mocokit.data import build_eval_dataset
    from mocokit.evaluation.pretrained import load_pretrained

    out = tmp_path / "e.npz"
    assert main(["embed", str(run_with_a_corrupt_test_image), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert f"1 unreadable image(s) left out: {CORRUPT}" in captured.out
    assert f"skipping unreadable image '{CORRUPT}'" in captured.err
    arrays = np.load(out)
    assert sorted(arrays["paths"]) == sorted({f"test/class{c}/{n}.png" for c in range(3) for n in range(2)}
                                             - {CORRUPT})
    pretrained = load_pretrained(run_with_a_corrupt_test_image, [])
    dataset = build_eval_dataset(pretrained.config.data, "test")
    for row, path in enumerate(arrays["paths"]):
        index = dataset.paths.index(path)
        assert arrays["indices"][row] == index and arrays["labels"][row] == dataset.labels[index]
        with torch.no_grad():
            expected = pretrained.backbone(dataset[index][0][None])[0]
        np.testing.assert_allclose(arrays["features"][row], expected.numpy(), rtol=1e-4, atol=1e-5)


def test_an_interrupted_embed_leaves_no_file_and_the_same_command_then_works(run_with_a_corrupt_test_image,
                                                                             tmp_path, capsys, monkeypatch):
    out = tmp_path / "e.npz"
    command = ["embed", str(run_with_a_corrupt_test_image), "--out", str(out)]

    def interrupted_savez(handle, **arrays):
        handle.write(b"PK\x03\x04 half of a zip file")
        raise KeyboardInterrupt  # Ctrl-C while the file is being written

    monkeypatch.setattr(np, "savez", interrupted_savez)
    assert main(command) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "checkpoint" not in err  # embed has none to speak of
    assert list(tmp_path.iterdir()) == []  # neither the .npz nor a temporary file
    monkeypatch.undo()
    assert main(command) == 0
    assert np.load(out)["features"].shape[0] == 5


def test_without_scikit_learn_the_map_is_a_pca_with_a_note(run_with_a_corrupt_test_image, tmp_path, capsys,
                                                            monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("sklearn", "umap") else real_find_spec(name, *a))
    plot = tmp_path / "map.png"
    assert main(["embed", str(run_with_a_corrupt_test_image), "--out", str(tmp_path / "e.npz"),
                 "--plot", str(plot)]) == 0
    captured = capsys.readouterr()
    assert "mocokit: warning: the map is a PCA: t-SNE needs scikit-learn" in captured.err
    assert f"wrote {plot} (pca)" in captured.out
    with Image.open(plot) as image:
        assert image.format == "PNG"
