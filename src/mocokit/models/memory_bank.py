"""The memory bank of Instance Discrimination (Wu et al. 2018), the dictionary MoCo compares itself with (He et al.
2020, figure 2b and figure 3): one stored feature per dataset image.

Negatives are K entries drawn at random from the bank; the positive key of an image is its own stored entry; after
each step the entries of the step's images are refreshed with the query encoder's features, blended with what was
stored (a momentum of 0.5, as Wu et al.). The keys of one step thus come from encoders of many different past steps:
the inconsistency that MoCo's momentum encoder removes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mocokit import distributed


class MemoryBank(nn.Module):
    """S×C unit features (a persistent buffer: checkpoints carry the bank), for a dataset of S images."""

    def __init__(self, dataset_size: int, dim: int, negatives: int, momentum: float = 0.5) -> None:
        super().__init__()
        if negatives < 1 or dataset_size < 2:
            raise ValueError(f"a memory bank needs >= 2 images and >= 1 negative, got {dataset_size} and {negatives}")
        self.register_buffer("features", F.normalize(torch.randn(dataset_size, dim), dim=1))  # S×C, random at start
        self.negatives = negatives
        self.momentum = momentum

    @torch.no_grad()
    def sample_negatives(self) -> torch.Tensor:
        """K×C entries drawn uniformly with replacement (a new tensor: the update below cannot disturb autograd).
        Drawn from the global RNG, which every process advances alike, so all ranks draw the same entries. As in Wu
        et al., a draw may hit an image of the batch itself (probability about K·N/S per step)."""
        rows = torch.randint(self.features.shape[0], (self.negatives,), device=self.features.device)
        return self.features[rows]

    @torch.no_grad()
    def positives(self, indices: torch.Tensor) -> torch.Tensor:
        """N×C stored entries of the images `indices` (a new tensor)."""
        return self.features[indices.to(self.features.device)]

    @torch.no_grad()
    def update_(self, indices: torch.Tensor, queries: torch.Tensor) -> None:
        """Blend the entries of `indices` (N, this rank's images) with `queries` (N×C unit rows) and re-normalise;
        the indices and queries of every rank are gathered first, so the banks stay identical across ranks."""
        indices = distributed.all_gather_concat(indices.to(self.features.device))
        queries = distributed.all_gather_concat(queries.detach())
        blended = self.momentum * self.features[indices] + (1 - self.momentum) * queries.to(self.features.dtype)
        self.features.index_copy_(0, indices, F.normalize(blended, dim=1))
