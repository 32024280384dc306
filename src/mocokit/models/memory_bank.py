"""The memory bank of Instance Discrimination (Wu et al. 2018), the dictionary MoCo compares itself with (He et al.
2020, figure 2b and figure 3): one stored feature per dataset image.

Negatives are K entries drawn at random from the bank; the positive key of an image is its own stored entry; after
each step the entries of the step's images are refreshed with the query encoder's features, blended with what was
stored (a momentum of 0.5, as Wu et al.). The keys of one step thus come from encoders of many different past steps:
the inconsistency that MoCo's momentum encoder removes. No momentum encoder is used.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mocokit import distributed
from mocokit.models.dictionaries import StoredNegatives
from mocokit.models.false_negatives import FalseNegativeCancellation


class MemoryBank(StoredNegatives):
    """S×C unit features (a persistent buffer: checkpoints carry the bank), for a dataset of S images."""

    name = "memory_bank"
    needs_key_encoder = False
    needs_indices = True

    def __init__(self, dataset_size: int, dim: int, negatives: int, momentum: float = 0.5, mask_own_keys: bool = False,
                 cancellation: FalseNegativeCancellation | None = None) -> None:
        super().__init__(mask_own_keys, cancellation)
        if negatives < 1 or dataset_size < 2:
            raise ValueError(f"a memory bank needs >= 2 images and >= 1 negative, got {dataset_size} and {negatives}")
        self.register_buffer("features", F.normalize(torch.randn(dataset_size, dim), dim=1))  # S×C, random at start
        self.negatives = negatives
        self.momentum = momentum
        self._step_negatives: torch.Tensor | None = None  # K×C drawn for the current step, shared by its queries
        self._pending: list[tuple[torch.Tensor, torch.Tensor]] = []  # (indices, features) staged for end_step

    def positive_keys(self, model, view1, view2, indices, symmetric):
        if indices is None:
            raise ValueError("model.dictionary=memory_bank needs the dataset index of every image: "
                             "call model(view1, view2, indices=...)")
        positives = self.positives(indices)  # N×C: each image's stored feature, the positive of both views
        rows = self.sample_rows()  # K
        self._step_negatives = self.features[rows]  # K×C (a new tensor: the update cannot disturb autograd)
        self._own = indices.to(rows.device)[:, None] == rows[None, :]  # N×K: draws of the query's own entry
        return [positives] * (2 if symmetric else 1)

    def logits(self, q, k, temperature):
        return self._logits_against(q, k, self._step_negatives, temperature)  # N×(1+K), the positive in column 0

    @torch.no_grad()
    def sample_rows(self) -> torch.Tensor:
        """K entry indices drawn uniformly with replacement, from the global RNG, which every process advances
        alike, so all ranks draw the same entries. As in Wu et al., a draw may hit an image of the batch itself
        (probability about K·N/S per step; model.mask_own_keys removes a query's own entry)."""
        return torch.randint(self.features.shape[0], (self.negatives,), device=self.features.device)

    @torch.no_grad()
    def sample_negatives(self) -> torch.Tensor:
        """K×C entries drawn as `sample_rows` (a new tensor)."""
        return self.features[self.sample_rows()]

    @torch.no_grad()
    def positives(self, indices: torch.Tensor) -> torch.Tensor:
        """N×C stored entries of the images `indices` (a new tensor)."""
        return self.features[indices.to(self.features.device)]

    @staticmethod
    def stored_feature(queries: list[torch.Tensor]) -> torch.Tensor:
        """What a step stores for its images (N×C): q1, or with two views the normalised mean direction."""
        stored = queries[0].detach()
        if len(queries) == 2:  # the second view queried the same entries
            stored = F.normalize(stored + queries[1].detach(), dim=1)
        return stored

    def remember(self, queries, keys, indices) -> None:
        """Stage the step's query features for its images (`stored_feature`)."""
        self._pending.append((indices, self.stored_feature(queries)))

    def end_step(self) -> None:
        pending, self._pending = self._pending, []
        for indices, stored in pending:
            self.update_(indices, stored)
        self._count_step()

    def discard_step(self) -> None:
        self._pending = []

    @torch.no_grad()
    def fill_(self, indices: torch.Tensor, features: torch.Tensor) -> None:
        """Overwrite the entries of `indices` (M distinct dataset indices, every process's) with `features` (M×C
        unit rows), no blending: a fresh bank filled before training (engine/dictionary_fill.py)."""
        self.features.index_copy_(0, indices.to(self.features.device), features.to(self.features))

    @torch.no_grad()
    def update_(self, indices: torch.Tensor, queries: torch.Tensor) -> None:
        """Blend the entries of `indices` (N, this rank's images) with `queries` (N×C unit rows) and re-normalise;
        the indices and queries of every rank are gathered first, so the banks stay identical across ranks."""
        indices = distributed.all_gather_concat(indices.to(self.features.device))
        queries = distributed.all_gather_concat(queries.detach())
        blended = self.momentum * self.features[indices] + (1 - self.momentum) * queries.to(self.features.dtype)
        self.features.index_copy_(0, indices, F.normalize(blended, dim=1))
