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
from mocokit.models.dictionaries import StoredNegatives
from mocokit.models.false_negatives import FalseNegativeCancellation

NO_IMAGE = -1  # the identity of a slot that holds no image's key (the random initial keys)


class Queue(StoredNegatives):
    """K×C keys (unit rows), the dataset index of each key's image (K, int64) and a write pointer, all persistent
    buffers so checkpoints carry them.

    The official code asserts K % batch == 0 and drops batches that do not fit; here the write wraps around K, so any
    batch size works (small datasets, last partial batches). The pointer stays on the device: no host sync per step.
    """

    name = "queue"

    def __init__(self, size: int, dim: int, mask_own_keys: bool = False,
                 cancellation: FalseNegativeCancellation | None = None) -> None:
        super().__init__(mask_own_keys, cancellation)
        # Random unit vectors at start, as the official code: the first K/B steps see random negatives.
        self.register_buffer("keys", F.normalize(torch.randn(size, dim), dim=1))  # K×C
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))  # index of the oldest key
        self.register_buffer("ids", torch.full((size,), NO_IMAGE, dtype=torch.long))  # K, each key's image
        self._pending: list[tuple[torch.Tensor, torch.Tensor]] = []  # (B×C keys, B ids) staged, written by end_step

    @property
    def size(self) -> int:
        return self.keys.shape[0]

    def positive_keys(self, model, view1, view2, indices, symmetric):
        # N×K: the slots holding a key of the query's own image (an older view of it), None when indices are unknown
        self._own = None if indices is None else indices.to(self.ids.device)[:, None] == self.ids[None, :]
        # The key of the other view from the momentum encoder (shuffle BN inside), no gradient. Symmetric: the two
        # loss terms' keys in the order of the official CIFAR demo's two calls, contrastive_loss(x1, x2) then (x2, x1).
        return model.momentum_keys(view2, view1) if symmetric else model.momentum_keys(view2)

    def logits(self, q, k, temperature):
        # The negatives are the queue as it is before this step: the K×C buffer itself, no copy.
        return self._logits_against(q, k, self.keys, temperature)  # N×(1+K), the positive in column 0

    def remember(self, queries, keys, indices) -> None:
        """Stage this step's keys of view 1 then view 2 (each image's key once) with their images' indices,
        gathered from every process so that all ranks enqueue the same global keys and identities."""
        if indices is None:
            ids = torch.full((keys[0].shape[0],), NO_IMAGE, dtype=torch.long, device=keys[0].device)
        else:
            ids = indices.to(keys[0].device)
        self.enqueue_(distributed.all_gather_concat(torch.cat(keys[::-1])),
                      distributed.all_gather_concat(torch.cat([ids] * len(keys))))

    def enqueue_(self, new_keys: torch.Tensor, new_ids: torch.Tensor | None = None) -> None:
        """Stage `new_keys` (B×C) and their images' indices `new_ids` (B; None: unknown) for `end_step`, which
        overwrites the oldest B entries and advances the pointer mod K (wrapping, so any B works; with B > K only
        the last K keys survive, as if enqueued one batch at a time)."""
        if new_ids is None:
            new_ids = torch.full((new_keys.shape[0],), NO_IMAGE, dtype=torch.long, device=new_keys.device)
        pending_rows = sum(batch.shape[0] for batch, _ in self._pending) + new_keys.shape[0]
        if pending_rows > max(self.size, new_keys.shape[0]):
            raise RuntimeError(
                f"{pending_rows} keys are staged for a queue of {self.size} without end_step(): call "
                "model.end_step() after each optimiser step (it writes the step's keys into the queue)"
            )
        self._pending.append((new_keys.detach(), new_ids))

    @torch.no_grad()
    def end_step(self) -> None:
        """Write the staged keys and ids into the buffers in place (B-row index_copy_s per staged batch, no queue
        copy)."""
        pending, self._pending = self._pending, []
        for staged, staged_ids in pending:
            self._write(staged, staged_ids)
        self._count_step()

    def discard_step(self) -> None:
        self._pending = []

    @torch.no_grad()
    def fill_(self, keys: torch.Tensor, ids: torch.Tensor) -> None:
        """Replace every slot: `keys` (K×C unit rows, oldest first) and their images' dataset indices `ids` (K); the
        pointer goes to 0 (the oldest), and anything staged is dropped. For a fresh queue filled before training
        (engine/dictionary_fill.py)."""
        if keys.shape != self.keys.shape or ids.shape != self.ids.shape:
            raise ValueError(f"a fill needs {tuple(self.keys.shape)} keys and {tuple(self.ids.shape)} ids, got "
                             f"{tuple(keys.shape)} and {tuple(ids.shape)}")
        self._pending = []
        self.keys.copy_(keys)
        self.ids.copy_(ids)
        self.ptr.zero_()

    def _write(self, staged: torch.Tensor, staged_ids: torch.Tensor) -> None:
        keys, ptr, size = self.keys, self.ptr, self.size
        if staged.shape[0] > size:
            ptr.add_(staged.shape[0] - size).remainder_(size)
            staged, staged_ids = staged[-size:], staged_ids[-size:]
        batch = staged.shape[0]
        rows = (ptr + torch.arange(batch, device=ptr.device)) % size  # B indices, wrapping at K
        keys.index_copy_(0, rows, staged.to(device=keys.device, dtype=keys.dtype))
        self.ids.index_copy_(0, rows, staged_ids.to(self.ids.device))
        ptr.add_(batch).remainder_(size)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        self._pending = []  # the loaded queue replaces everything, including keys staged before the load
        if prefix + "keys" in state_dict and prefix + "ids" not in state_dict:  # a checkpoint from before identities
            state_dict[prefix + "ids"] = torch.full_like(self.ids, NO_IMAGE)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
