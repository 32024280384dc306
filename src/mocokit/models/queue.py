"""The dictionary of MoCo v1/v2: a FIFO queue of the K most recent keys, written in place without a per-step copy.

Why the write waits for `end_step`: a step computes its loss against the queue as it is (the K×C buffer itself, no
copy) and autograd keeps that buffer for the backward pass (d loss / d q needs the negatives). Writing this step's
keys into it before the backward would corrupt the gradient (autograd refuses: "modified by an inplace operation");
the official code sidesteps this with a K×C copy every step (32 MB for K=65536). Here the forward stages the keys and
`end_step()`, called after the backward, writes them in place. Several forwards before one `end_step` (gradient
accumulation) all see the queue as it was, and their keys are written in order.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mocokit import distributed
from mocokit.losses import logits_with_queue
from mocokit.models.dictionaries import Dictionary


class Queue(Dictionary):
    """K×C keys (unit rows) and a write pointer, both persistent buffers so checkpoints carry them.

    The official code asserts K % batch == 0 and drops batches that do not fit; here the write wraps around K, so any
    batch size works (small datasets, last partial batches). The pointer stays on the device: no host sync per step.
    """

    name = "queue"

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        # Random unit vectors at start, as the official code: the first K/B steps see random negatives.
        self.register_buffer("keys", F.normalize(torch.randn(size, dim), dim=1))  # K×C
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))  # index of the oldest key
        self._pending: list[torch.Tensor] = []  # B×C key batches staged by forwards, written by end_step

    @property
    def size(self) -> int:
        return self.keys.shape[0]

    def positive_keys(self, model, view1, view2, indices, symmetric):
        # The key of the other view from the momentum encoder (shuffle BN inside), no gradient. Symmetric: the two
        # loss terms' keys in the order of the official CIFAR demo's two calls, contrastive_loss(x1, x2) then (x2, x1).
        return model.momentum_keys(view2, view1) if symmetric else model.momentum_keys(view2)

    def logits(self, q, k, temperature):
        # The negatives are the queue as it is before this step: the K×C buffer itself, no copy.
        return logits_with_queue(q, k, self.keys, temperature)  # N×(1+K), the positive in column 0

    def remember(self, queries, keys, indices) -> None:
        """Stage this step's keys of view 1 then view 2 (each image's key once), gathered from every process so that
        all ranks enqueue the same global keys."""
        self.enqueue_(distributed.all_gather_concat(torch.cat(keys[::-1])))

    def enqueue_(self, new_keys: torch.Tensor) -> None:
        """Stage `new_keys` (B×C) for `end_step`, which overwrites the oldest B entries and advances the pointer mod
        K (wrapping, so any B works; with B > K only the last K keys survive, as if enqueued one batch at a time)."""
        pending_rows = sum(batch.shape[0] for batch in self._pending) + new_keys.shape[0]
        if pending_rows > max(self.size, new_keys.shape[0]):
            raise RuntimeError(
                f"{pending_rows} keys are staged for a queue of {self.size} without end_step(): call "
                "model.end_step() after each optimiser step (it writes the step's keys into the queue)"
            )
        self._pending.append(new_keys.detach())

    @torch.no_grad()
    def end_step(self) -> None:
        """Write the staged keys into the buffer in place (a B-row index_copy_ per staged batch, no queue copy)."""
        pending, self._pending = self._pending, []
        for staged in pending:
            self._write(staged)

    def discard_step(self) -> None:
        self._pending = []

    def _write(self, staged: torch.Tensor) -> None:
        keys, ptr, size = self.keys, self.ptr, self.size
        if staged.shape[0] > size:
            ptr.add_(staged.shape[0] - size).remainder_(size)
            staged = staged[-size:]
        batch = staged.shape[0]
        rows = (ptr + torch.arange(batch, device=ptr.device)) % size  # B indices, wrapping at K
        keys.index_copy_(0, rows, staged.to(device=keys.device, dtype=keys.dtype))
        ptr.add_(batch).remainder_(size)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        self._pending = []  # the loaded queue replaces everything, including keys staged before the load
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
