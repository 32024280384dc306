"""`mocokit embed` end to end on a tiny real run and a real CIFAR-10 subset: arrays, plot, JSON, refusals."""

import importlib.util
import json

import numpy as np
import pytest
import torch
from PIL import Image

from mocokit.data import build_eval_dataset
from mocokit.evaluation.pretrained import load_pretrained


def test_embed_writes_rows_that_match_the_dataset_and_a_png_map(mocokit_cli, tiny_run, cifar_data, tmp_path, capsys):
    out, plot = tmp_path / "test.npz", tmp_path / "map.png"
    assert mocokit_cli("embed", tiny_run, *cifar_data, "--out", out, "--max-images", 40, "--plot", plot,
                       "--method", "pca", "--json") == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result == {**result, "out": str(out), "images": 40, "features": 64, "split": "test", "classes": 10,
                      "plot": str(plot), "method": "pca", "step": 2}
    arrays = np.load(out)  # no pickle needed: paths and classes are string arrays
    assert arrays["features"].shape == (40, 64) and arrays["features"].dtype == np.float32
    assert arrays["labels"].shape == arrays["paths"].shape == arrays["indices"].shape == (40,)
    pretrained = load_pretrained(tiny_run, cifar_data)
    dataset = build_eval_dataset(pretrained.config.data, "test")
    assert list(arrays["classes"]) == dataset.classes
    for row in (0, 17, 39):
        index = int(arrays["indices"][row])
        assert arrays["paths"][row] == dataset.paths[index] and arrays["labels"][row] == dataset.labels[index]
        assert f"/{dataset.classes[arrays['labels'][row]]}/" in arrays["paths"][row]
        with torch.no_grad():
            expected = pretrained.backbone(dataset[index][0][None])[0]
        np.testing.assert_allclose(arrays["features"][row], expected.numpy(), rtol=1e-4, atol=1e-5)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(plot) as image:
        assert image.format == "PNG" and min(image.size) > 100


def test_refusals_exit_2_before_any_feature_is_computed(mocokit_cli, tiny_run, tmp_path, capsys, monkeypatch):
    with pytest.raises(SystemExit) as usage_error:
        mocokit_cli("embed", tiny_run, "data.num_workers=0")
    assert usage_error.value.code == 2 and "--out" in capsys.readouterr().err
    out = tmp_path / "x.npz"
    out.write_bytes(b"keep")
    assert mocokit_cli("embed", tiny_run, "--out", out) == 2
    assert "--force" in capsys.readouterr().err and out.read_bytes() == b"keep"
    assert mocokit_cli("embed", tmp_path / "no-run", "--out", tmp_path / "y.npz") == 2
    assert "no such run folder" in capsys.readouterr().err

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("sklearn", "umap") else real_find_spec(name, *a))
    assert mocokit_cli("embed", tiny_run, "--out", tmp_path / "z.npz", "--plot", tmp_path / "z.png",
                       "--method", "tsne") == 2
    assert "pip install scikit-learn" in capsys.readouterr().err and not (tmp_path / "z.npz").exists()
