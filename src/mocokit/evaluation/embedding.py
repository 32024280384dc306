"""Features of a dataset split, with the label and file path of every row, saved as one `.npz` file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from mocokit.data.subset import seeded_subset
from mocokit.features import extract_features


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
    """Features of `dataset` (items (image, label), with `.paths` and `.classes`: `build_eval_dataset`), or of a
    seeded random subset of `max_images` of them kept in dataset order. Row i of every array is the same image."""
    chosen = seeded_subset(dataset, max_images, seed)
    indices = list(chosen.indices) if isinstance(chosen, Subset) else list(range(len(dataset)))
    loader = DataLoader(chosen, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        generator=torch.Generator())  # worker seeds off the global RNG
    features, labels = extract_features(backbone, loader, device)
    return Embeddings(
        features=features.cpu().numpy().astype(np.float32),
        labels=labels.cpu().numpy().astype(np.int64),
        paths=np.array([dataset.paths[i] for i in indices], dtype=str),
        indices=np.array(indices, dtype=np.int64),
        classes=np.array(list(dataset.classes), dtype=str),
    )


def save_embeddings(embeddings: Embeddings, path: Path) -> Path:
    """`np.savez` of the arrays under their field names (string arrays, so `np.load` needs no pickle)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:  # a file object: np.savez would otherwise append ".npz" to other names
        np.savez(handle, **vars(embeddings))
    return path
