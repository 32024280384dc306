"""The dictionary of MoCo v1/v2: a FIFO queue of the K most recent keys, written in place without a per-step copy.

Why the write is staged: a step computes its loss against the queue as it was (the K×C buffer itself, no copy) and
autograd keeps that buffer for the backward pass (d loss / d q needs the negatives). Writing this step's keys into it
before the backward would corrupt the gradient (autograd refuses: "modified by an inplace operation"); the official
code sidesteps this with a K×C copy every step (32 MB for K=65536). Here `enqueue_` only stages the keys and `commit_`
writes them in place later: at the start of the next training step (after the previous backward) or as soon as anyone
reads the queue. Readers therefore always see the committed state, i.e. the queue after every enqueue so far:
`keys` and `ptr`, `state_dict()` (checkpoints, exports), `load_state_dict()`. The only rule for callers: run a
step's backward before reading the queue or running the next forward; reading it in between is an autograd error
("modified by an inplace operation"), never a silent wrong gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class KeyQueue(nn.Module):
    """K×C keys (unit rows) and a write pointer, both persistent buffers so checkpoints carry them.

    The official code asserts K % batch == 0 and drops batches that do not fit; here the write wraps around K, so any
    batch size works (small datasets, last partial batches). The pointer stays on the device: no host sync per step.
    """

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        self._staged: torch.Tensor | None = None  # B×C keys enqueued but not yet written (a plain attribute)
        # Set directly rather than with register_buffer, whose name check would read the `keys`/`ptr` properties.
        # Random unit vectors at start, as the official code: the first K/B steps see random negatives.
        self._buffers["keys"] = F.normalize(torch.randn(size, dim), dim=1)  # K×C, persistent
        self._buffers["ptr"] = torch.zeros((), dtype=torch.long)  # index of the oldest key, persistent

    @property
    def keys(self) -> torch.Tensor:
        """K×C, the committed keys (every enqueue so far written)."""
        self.commit_()
        return self._buffers["keys"]

    @property
    def ptr(self) -> torch.Tensor:
        """0-dim long tensor, the committed write pointer (index of the oldest key)."""
        self.commit_()
        return self._buffers["ptr"]

    @property
    def size(self) -> int:
        return self._buffers["keys"].shape[0]

    def negatives(self) -> torch.Tensor:
        """K×C, the queue as it is before the current step: the buffer itself, not a copy. Call it once per step,
        before this step's `enqueue_`; the step's backward must run before the queue is read again."""
        return self.keys

    @torch.no_grad()
    def enqueue_(self, new_keys: torch.Tensor) -> None:
        """Enqueue `new_keys` (B×C): overwrite the oldest B entries and advance the pointer mod K (wrapping, so any B
        works; with B > K only the last K keys survive, as if enqueued one batch at a time). The write itself is
        staged until the next `commit_` (see the module docstring); readers see it as done."""
        self.commit_()  # a batch staged by an earlier step that nobody has read since
        self._staged = new_keys.detach()

    @torch.no_grad()
    def commit_(self) -> None:
        """Write the staged keys into the buffer in place (a B-row index_copy_, no copy of the queue)."""
        staged = self._staged
        if staged is None:
            return
        self._staged = None
        keys, ptr = self._buffers["keys"], self._buffers["ptr"]
        size = keys.shape[0]
        if staged.shape[0] > size:
            ptr.add_(staged.shape[0] - size).remainder_(size)
            staged = staged[-size:]
        batch = staged.shape[0]
        rows = (ptr + torch.arange(batch, device=ptr.device)) % size  # B indices, wrapping at K
        keys.index_copy_(0, rows, staged.to(device=keys.device, dtype=keys.dtype))
        ptr.add_(batch).remainder_(size)

    # state_dict() and load_state_dict() go through these two hooks of nn.Module.
    def _save_to_state_dict(self, destination, prefix, keep_vars) -> None:
        self.commit_()  # a checkpoint holds the queue after every enqueue so far; nothing staged is lost
        super()._save_to_state_dict(destination, prefix, keep_vars)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        self._staged = None  # the loaded queue replaces everything, including a batch staged before the load
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
