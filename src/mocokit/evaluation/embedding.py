"""Features of a dataset split, with the label and file path of every row, saved as one `.npz` file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from mocokit.data.subset import seeded_subset
from mocokit.features import extract_features
from mocokit.files import atomic_output


@dataclass
class Embeddings:
    features: np.ndarray  # N×D float32, the backbone's features in eval mode
    labels: np.ndarray  # N int64, class index (-1: unlabelled)
    paths: np.ndarray  # N str, each image's source name (relative path, archive member, `cifar10/test/00042`)
    indices: np.ndarray  # N int64, position of each row in the split
    classes: np.ndarray  # C str, the class names (label i is classes[i]; empty when unlabelled)


def embed_dataset(
    backbone: nn.Module,
    dataset,
    device: torch.device,
    *,
    max_images: int | None = None,
    seed: int = 0,
    batch_size: int = 256,
    num_workers: int = 0,
) -> Embeddings:
    """Features of `dataset` (`build_eval_dataset`: items (image, label), `.read(i)`, `.paths`, `.classes`), or of a
    seeded random subset of `max_images` of them kept in dataset order. Row i of every array is the same image:
    an unreadable image (which the dataset would replace by the next readable one) has no row, and the dataset's
    `unreadable()` names it."""
    chosen = seeded_subset(dataset, max_images, seed)
    indices = list(chosen.indices) if isinstance(chosen, Subset) else list(range(len(dataset)))
    loader = DataLoader(_ExactItems(dataset, indices), batch_size=batch_size, shuffle=False,
                        num_workers=num_workers, generator=torch.Generator())  # worker seeds off the global RNG
    features, targets = extract_features(backbone, loader, device)  # targets N×3: label, index asked, index read
    targets = targets.cpu()
    same = targets[:, 1] == targets[:, 2]  # False where the image asked for was unreadable and replaced
    kept = targets[same, 1].tolist()
    return Embeddings(
        features=features.cpu()[same].numpy().astype(np.float32),
        labels=targets[same, 0].numpy().astype(np.int64),
        paths=np.array([dataset.paths[i] for i in kept], dtype=str),
        indices=np.array(kept, dtype=np.int64),
        classes=np.array(list(dataset.classes), dtype=str),
    )


class _ExactItems(Dataset):
    """Items (image, [label, index asked for, index read]) of `dataset` at `indices`: the two indices differ where
    the image asked for could not be read and the dataset returned the next readable one instead."""

    def __init__(self, dataset, indices: list[int]) -> None:
        self.dataset, self.indices = dataset, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> tuple[torch.Tensor, torch.Tensor]:
        index = self.indices[position]
        image, label, actual = self.dataset.read(index)
        return image, torch.tensor([label, index, actual])


def save_embeddings(embeddings: Embeddings, path: Path) -> Path:
    """`np.savez` of the arrays under their field names (string arrays, so `np.load` needs no pickle). The file
    appears whole or not at all (`atomic_output`): an interrupted write leaves nothing under `path`."""
    with atomic_output(path) as partial, open(partial, "wb") as handle:  # a file object: np.savez would
        np.savez(handle, **vars(embeddings))  # otherwise append ".npz" to other names
    return path
