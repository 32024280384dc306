"""Seeded subsets: a reproducible part of a dataset, for quick runs, tests and a fast kNN monitor."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset, Subset


def seeded_subset(dataset: Dataset, size: int | None, seed: int) -> Dataset:
    """At most `size` items of `dataset`, drawn without replacement by a seeded permutation and kept in dataset
    order (the whole dataset when size is None or not smaller). Attributes such as `.classes` stay reachable
    through `.dataset`."""
    if size is None or size >= len(dataset):
        return dataset
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:size]
    subset = Subset(dataset, sorted(order.tolist()))
    subset.classes = getattr(dataset, "classes", [])  # type: ignore[attr-defined]
    return subset
