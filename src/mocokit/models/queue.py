"""The dictionary of MoCo v1/v2: a FIFO queue of the K most recent keys."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class KeyQueue(nn.Module):
    """K×C keys (unit rows) and a write pointer, both persistent buffers so checkpoints carry them.

    The official code asserts K % batch == 0 and drops batches that do not fit; here the write wraps around K, so any
    batch size works (small datasets, last partial batches). The pointer stays on the device: no host sync per step.
    """

    keys: torch.Tensor
    ptr: torch.Tensor

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        # Random unit vectors at start, as the official code: the first K/B steps see random negatives.
        self.register_buffer("keys", F.normalize(torch.randn(size, dim), dim=1))  # K×C
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))  # index of the oldest key

    @property
    def size(self) -> int:
        return self.keys.shape[0]

    @torch.no_grad()
    def enqueue_(self, new_keys: torch.Tensor) -> None:
        """Overwrite the oldest B entries with `new_keys` (B×C) and advance the pointer mod K.
        With B > K only the last K keys survive, as if they had been enqueued one batch at a time."""
        new_keys = new_keys.detach()
        if new_keys.shape[0] > self.size:
            self.ptr.add_(new_keys.shape[0] - self.size).remainder_(self.size)
            new_keys = new_keys[-self.size :]
        batch = new_keys.shape[0]
        rows = (self.ptr + torch.arange(batch, device=self.ptr.device)) % self.size  # B indices, wrapping at K
        self.keys.index_copy_(0, rows, new_keys.to(self.keys.dtype))
        self.ptr.add_(batch).remainder_(self.size)
