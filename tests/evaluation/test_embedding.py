"""Embeddings: row i of features, labels, paths and indices is the same image; saved without pickles."""

import numpy as np
import torch
from PIL import Image
from torch import nn

from mocokit.evaluation.embedding import embed_dataset, save_embeddings
from mocokit.evaluation.embedding_plot import plot_feature_map


class NumberedImages(torch.utils.data.Dataset):
    """Image i is filled with the value i, so a mean-pooling backbone gives back i."""

    classes = ["even", "odd"]

    def __init__(self, n: int, unreadable: tuple[int, ...] = ()) -> None:
        self.paths = [f"img/{i:03d}.png" for i in range(n)]
        self.bad = set(unreadable)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        return self.read(i)[:2]

    def read(self, i: int):
        """As `EvalDataset.read`: an unreadable image is replaced by the next readable one, whose index is returned."""
        while i in self.bad:
            i = (i + 1) % len(self)
        return torch.full((3, 4, 4), float(i)), i % 2, i


class MeanPool(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))  # N×3


def test_a_subset_keeps_rows_aligned_and_saves_plain_arrays(tmp_path):
    embeddings = embed_dataset(MeanPool(), NumberedImages(50), torch.device("cpu"), max_images=20, seed=3,
                               batch_size=8)
    assert embeddings.features.shape == (20, 3) and len(set(embeddings.indices.tolist())) == 20
    assert list(embeddings.indices) == sorted(embeddings.indices)  # dataset order
    np.testing.assert_array_equal(embeddings.features[:, 0], embeddings.indices)  # row i is image indices[i]
    np.testing.assert_array_equal(embeddings.labels, embeddings.indices % 2)
    assert list(embeddings.paths) == [f"img/{i:03d}.png" for i in embeddings.indices]
    path = save_embeddings(embeddings, tmp_path / "e.npz")
    with np.load(path, allow_pickle=False) as arrays:
        assert set(arrays.files) == {"features", "labels", "paths", "indices", "classes"}
        assert list(arrays["classes"]) == ["even", "odd"] and arrays["paths"][0] == embeddings.paths[0]


def test_an_unreadable_image_has_no_row_and_never_lends_its_path_to_a_neighbour():
    embeddings = embed_dataset(MeanPool(), NumberedImages(10, unreadable=(3, 4, 9)), torch.device("cpu"),
                               batch_size=4)
    assert list(embeddings.indices) == [0, 1, 2, 5, 6, 7, 8]
    np.testing.assert_array_equal(embeddings.features[:, 0], embeddings.indices)  # each row's own image
    assert list(embeddings.paths) == [f"img/{i:03d}.png" for i in embeddings.indices]
    np.testing.assert_array_equal(embeddings.labels, embeddings.indices % 2)


def test_the_map_is_a_png_with_or_without_labels(tmp_path):
    coords = np.random.default_rng(0).normal(size=(30, 2))
    for name, labels, classes in (("labelled", np.arange(30) % 3, ["a", "b", "c"]),
                                  ("unlabelled", -np.ones(30, dtype=int), [])):
        path = plot_feature_map(coords, labels, classes, tmp_path / f"{name}.png", name)
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size[0] > 100
            pixels = np.asarray(image.convert("RGB"))
        assert (pixels.std(axis=2) > 30).any() == (name == "labelled")  # coloured points only with classes
