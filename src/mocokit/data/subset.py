"""Seeded subsets: a reproducible part of a dataset, for quick runs, tests and a fast kNN monitor."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset, Subset


class IndexedSubset(Subset):
    """A subset of a dataset whose items end with the item's dataset index (the pretraining datasets' `(views,
    label, index)`), with that index translated into the position in the subset: per-image state such as the memory
    bank then has one row per subset image, 0 … len-1. When an unreadable image was replaced by a readable
    neighbour outside the subset, the item keeps the position that was asked for."""

    def __init__(self, dataset: Dataset, indices: list[int]) -> None:
        super().__init__(dataset, indices)
        self.position = {index: position for position, index in enumerate(indices)}

    def __getitem__(self, position: int):
        *item, index = self.dataset[self.indices[position]]
        return (*item, self.position.get(int(index), position))

    def __getitems__(self, positions: list[int]) -> list:
        return [self[position] for position in positions]


def seeded_subset(dataset: Dataset, size: int | None, seed: int, indexed: bool = False) -> Dataset:
    """At most `size` items of `dataset`, drawn without replacement by a seeded permutation and kept in dataset
    order (the whole dataset when size is None or not smaller). Attributes such as `.classes` stay reachable
    through `.dataset`. indexed: the items end with their dataset index, which becomes the position in the
    subset (`IndexedSubset`)."""
    if size is None or size >= len(dataset):
        return dataset
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:size]
    subset = (IndexedSubset if indexed else Subset)(dataset, sorted(order.tolist()))
    subset.classes = getattr(dataset, "classes", [])  # type: ignore[attr-defined]
    return subset
