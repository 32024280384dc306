"""A fresh dictionary filled with keys of real training images before the first step of a run that starts from
trained weights (model.init).

Why: a queue starts as K random unit keys (models/queue.py), a memory bank as S random unit rows. Against a trained
encoder, whose keys of real images cluster, random directions are negatives that are trivially easy to tell from
the positive: for the first K/B steps (until the run's own keys have replaced them) the loss and its gradient
come from a dictionary that is partly noise. With a random encoder this does not matter (all keys are noise at first);
with trained weights it wastes the start. So the dictionary is filled the way training would fill it, before the
first step:

- images: the first global batches of "epoch -1": `EpochSampler.epoch_order(-1)` and augmentations seeded by
  (train.seed, -1, index), as `SeededSamples` seeds any epoch (then epoch -2's order, ... when one epoch is not
  enough). Training uses epochs 0, 1, ...: its order and views are not changed by the fill.
- queue: ceil(K / keys per batch) global batches (keys per batch: the global batch, twice when model.symmetric);
  the keys of the step (`MoCo.momentum_keys` of view 2, and of view 1 when symmetric, as `Queue.remember` stores
  them), from the views the step makes (`StepRunner.views`: the batched augmentation, channels_last) under the
  run's autocast, with the model in train mode: BatchNorm on batch statistics and shuffle BN, as inside the step.
  The first K keys fill slots 0..K-1 (oldest first), their images' dataset indices the queue's ids (own-key masking
  works from the first step), the pointer 0.
- memory bank: every image once, ceil(S / B) global batches (the last completed with images of epoch -2 so that it
  is a full batch; those are computed but not written), each row the entry a step would store: the query encoder's
  unit feature (with two views, their normalised mean direction, as `MemoryBank.remember`).
- nothing else changes: the forwards in train mode update BatchNorm running statistics, which are restored
  afterwards (every buffer of the model outside the dictionary), and the random generators (CPU, and the CUDA
  device's) are forked, so training draws exactly what it would have drawn without the fill.

Dictionaries without stored keys (v3's batch, end-to-end) have nothing to fill.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader

from mocokit import distributed
from mocokit.engine.step import StepRunner
from mocokit.models.memory_bank import MemoryBank
from mocokit.models.moco import MoCo
from mocokit.models.queue import Queue
from mocokit.training.sampling import EpochSampler

FIRST_FILL_EPOCH = -1  # the epoch tag of the fill's order and augmentations (training uses 0, 1, ...)


@dataclass(frozen=True)
class DictionaryFill:
    """What `fill_dictionary` did."""

    dictionary: str  # "queue" or "memory_bank"
    entries: int  # keys written (K, or the S rows of the memory bank)
    batches: int  # global batches encoded
    images: int  # images encoded (batches x global batch)
    encoder: str  # "key encoder" (the queue) or "query encoder" (the memory bank)
    seconds: float

    def line(self) -> str:
        what = "queue" if self.dictionary == "queue" else "memory bank"
        unit = "keys" if self.dictionary == "queue" else "rows"
        batches = f"{self.batches:,} batch{'es' if self.batches != 1 else ''}"
        return (f"{what} filled with {self.entries:,} {unit} of {batches} of training images by the initial "
                f"{self.encoder}, {self.seconds:.1f} s")

    def record(self) -> dict:
        return {"dictionary": self.dictionary, "entries": self.entries, "batches": self.batches,
                "images": self.images, "encoder": self.encoder, "seconds": self.seconds}


def fill_order(sampler: EpochSampler, batches: int) -> Iterator[tuple[int, int]]:
    """This process's (epoch, index) keys of the fill's first `batches` global batches: the global sequence is
    epoch -1's order, then epoch -2's, ...; global batch b is its positions [b*G, (b+1)*G), of which this process
    takes its slice, as `EpochSampler` does for training."""
    size, local, global_batch = sampler.size, sampler.batch_size, sampler.global_batch
    orders: dict[int, list[int]] = {}
    for batch in range(batches):
        start = batch * global_batch + sampler.rank * local
        for position in range(start, start + local):
            epoch = FIRST_FILL_EPOCH - position // size
            if epoch not in orders:
                orders[epoch] = sampler.epoch_order(epoch).tolist()
            yield epoch, orders[epoch][position % size]


def fill_dictionary(run_step: StepRunner, loader: DataLoader, say: Callable[[str], None] = print
                    ) -> DictionaryFill | None:
    """Fill the model's queue or memory bank with keys of training images computed by its current weights, as the
    step computes them (module docstring); None, and nothing done, for a dictionary without stored keys. `loader`
    is the run's training loader (its `EpochSampler`, its `SeededSamples`, workers and collate function). Every
    process calls it (shuffle BN and the gathers are collectives). Says one line with what it did."""
    model: MoCo = run_step.moco
    dictionary = model.dictionary
    if not isinstance(dictionary, (Queue, MemoryBank)):
        return None
    sampler: EpochSampler = loader.sampler
    symmetric = model.symmetric
    if isinstance(dictionary, Queue):
        per_batch = sampler.global_batch * (2 if symmetric else 1)
        entries, batches = dictionary.size, math.ceil(dictionary.size / per_batch)
    else:
        entries, batches = sampler.size, math.ceil(sampler.size / sampler.global_batch)
    fill_loader = DataLoader(
        loader.dataset, batch_size=sampler.batch_size, sampler=list(fill_order(sampler, batches)),
        num_workers=loader.num_workers, collate_fn=loader.collate_fn, pin_memory=loader.pin_memory,
        generator=torch.Generator().manual_seed(sampler.seed),  # worker seeds off the global generator
    )
    device = run_step.device
    started = time.perf_counter()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), _buffers_kept(model), \
            torch.no_grad():
        was_training = model.training
        model.train()  # batch statistics and shuffle BN, as in the step
        try:
            if isinstance(dictionary, Queue):
                _fill_queue(model, dictionary, run_step, fill_loader, symmetric)
            else:
                _fill_memory_bank(model, dictionary, run_step, fill_loader, symmetric)
        finally:
            model.train(was_training)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    encoder = "key encoder" if isinstance(dictionary, Queue) else "query encoder"
    fill = DictionaryFill(dictionary.name, entries, batches, batches * sampler.global_batch, encoder,
                          time.perf_counter() - started)
    say(fill.line())
    return fill


def _fill_queue(model: MoCo, queue: Queue, run_step: StepRunner, loader: DataLoader, symmetric: bool) -> None:
    keys, ids = [], []
    for views, _labels, indices in loader:
        view1, view2 = run_step.views(views)
        with run_step.autocast():
            new = model.momentum_keys(view2, view1) if symmetric else model.momentum_keys(view2)  # [k2(, k1)] N×C
        for k in new[::-1]:  # k1 then k2, as Queue.remember stages them
            keys.append(distributed.all_gather_concat(k.float()))  # G×C
            ids.append(distributed.all_gather_concat(indices.to(k.device)))  # G
    queue.fill_(torch.cat(keys)[: queue.size], torch.cat(ids)[: queue.size])


def _fill_memory_bank(model: MoCo, bank: MemoryBank, run_step: StepRunner, loader: DataLoader,
                      symmetric: bool) -> None:
    written, size = 0, bank.features.shape[0]
    for views, _labels, indices in loader:
        view1, view2 = run_step.views(views)
        with run_step.autocast():
            queries = model.queries(view1, view2) if symmetric else model.queries(view1)  # [q1(, q2)] N×C
        stored = bank.stored_feature([q.float() for q in queries])  # what a step would store
        rows = distributed.all_gather_concat(stored)  # G×C, in the order of the global batch's positions
        images = distributed.all_gather_concat(indices.to(stored.device))  # G
        new = min(rows.shape[0], size - written)  # the positions past S only complete the last batch
        bank.fill_(images[:new], rows[:new])
        written += new


@contextmanager
def _buffers_kept(model: MoCo) -> Iterator[None]:
    """Every buffer of the model outside its dictionary (BatchNorm running statistics and counters) as it was on
    entry, restored on exit."""
    skip = model.dictionary.name + "."
    buffers = {name: buffer for name, buffer in model.named_buffers() if not name.startswith(skip)}
    saved = {name: buffer.clone() for name, buffer in buffers.items()}
    try:
        yield
    finally:
        with torch.no_grad():
            for name, buffer in buffers.items():
                buffer.copy_(saved[name])
