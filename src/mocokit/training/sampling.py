"""The order of the training data: a pure function of (seed, epoch), resumable mid-epoch, identical global batches on
any number of processes; and per-sample augmentation seeds, so a resumed run sees the same views."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import torch
from torch.utils.data import Dataset, Sampler


class EpochSampler(Sampler[tuple[int, int]]):
    """Yields (epoch, index) keys for this process, `batch_size` per step, whole global batches only.

    Epoch e's order is a permutation drawn from a generator seeded with (seed, e). Global batch b is
    order[b·G : (b+1)·G] with G = batch_size·world; process r takes its r-th slice of it, so the global batches do
    not depend on the number of processes. `start_batch` skips the batches an interrupted epoch already did.
    """

    def __init__(self, size: int, batch_size: int, seed: int, rank: int = 0, world: int = 1) -> None:
        self.size, self.batch_size, self.seed, self.rank, self.world = size, batch_size, seed, rank, world
        self.epoch, self.start_batch = 0, 0

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.world

    @property
    def batches_per_epoch(self) -> int:
        return self.size // self.global_batch  # the incomplete last global batch is dropped

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def epoch_order(self, epoch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.size, generator=generator)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = self.epoch_order(self.epoch)
        for batch in range(self.start_batch, self.batches_per_epoch):
            start = batch * self.global_batch + self.rank * self.batch_size
            for index in order[start : start + self.batch_size].tolist():
                yield self.epoch, index

    def __len__(self) -> int:
        return (self.batches_per_epoch - self.start_batch) * self.batch_size


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for one sample's augmentation in one epoch (stable across runs, processes and platforms)."""
    digest = hashlib.blake2b(f"{seed}/{epoch}/{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class SeededSamples(Dataset):
    """Wraps a dataset whose items are random (augmentations): item (epoch, i) is dataset[i] drawn with torch's RNG
    seeded by (seed, epoch, i), so the views of a sample depend neither on the worker that made them nor on whether
    the run was interrupted. The caller's RNG state is left untouched."""

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        epoch, index = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed(self.seed, epoch, index))
            return self.dataset[index]
