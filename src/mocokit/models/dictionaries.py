"""Dictionaries: where a MoCo query's positive key and its negatives come from (He et al. 2020, figure 2).

A dictionary is a part of the `MoCo` module. Per step it
- computes the queries and each query's positive key (`queries_and_keys`, `positive_keys`): the keys from the
  momentum encoder, the query encoder or its storage;
- turns a query and its keys into logits and the column of the positive (`logits`, see mocokit/losses.py);
- stages what the step writes into it (`remember`), which `end_step` writes once the step's backward has run, or
  `discard_step` drops (a step that was not applied).
It declares what it needs: a momentum (key) encoder, the images' dataset indices.

- `Queue` (models/queue.py): MoCo v1/v2, the K most recent keys of the momentum encoder.
- `BatchNegatives` (here): MoCo v3, the other keys of the global batch, with v3's 2T loss factor.
- `EndToEnd` (here): figure 2a, the other keys of the batch encoded by the query encoder itself, with gradients.
- `MemoryBank` (models/memory_bank.py): figure 2b (Wu et al. 2018), one stored feature per dataset image.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from mocokit import distributed
from mocokit.losses import logits_in_batch, logits_with_queue
from mocokit.models.false_negatives import FalseNegativeCancellation

if TYPE_CHECKING:
    from mocokit.models.moco import MoCo


class Dictionary(nn.Module):
    """The interface of a dictionary part; the defaults are those of a dictionary with no state of its own."""

    name: ClassVar[str]  # its model.dictionary value, and the name it has in the model (and its checkpoint keys)
    needs_key_encoder: ClassVar[bool] = True  # keys from a momentum encoder (else the model has none)
    needs_indices: ClassVar[bool] = False  # reads the images' dataset indices

    def queries_and_keys(self, model: MoCo, view1: torch.Tensor, view2: torch.Tensor, indices: torch.Tensor | None,
                         symmetric: bool) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The step's queries [q1] or [q1, q2] (N×C, from the query encoder) and their positive keys. The queries
        come first, in one batched call where the backbone allows it, then the keys."""
        queries = model.queries(view1, view2) if symmetric else model.queries(view1)
        return queries, self.positive_keys(model, view1, view2, indices, symmetric)

    def positive_keys(self, model: MoCo, view1: torch.Tensor, view2: torch.Tensor, indices: torch.Tensor | None,
                      symmetric: bool) -> list[torch.Tensor]:
        """The positive keys of the queries [q1] (asymmetric) or [q1, q2] (symmetric): [k2] or [k2, k1], each N×C
        (or, for batch dictionaries, the global batch's keys (P·N)×C, which are also the negatives)."""
        raise NotImplementedError

    def logits(self, q: torch.Tensor, k: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits N×M, targets N) for queries q (N×C) and what `positive_keys` returned for them."""
        raise NotImplementedError

    def loss_scale(self, temperature: float) -> float | None:
        """A factor on each loss term (v3's 2T), or None."""
        return None

    def remember(self, queries: list[torch.Tensor], keys: list[torch.Tensor], indices: torch.Tensor | None) -> None:
        """Stage what this training step writes into the dictionary (written by `end_step`)."""

    def end_step(self) -> None:
        """Write what the steps since the last `end_step` staged. Call after the backward (and optimiser step)."""

    def discard_step(self) -> None:
        """Drop what was staged: the step was not applied (train.on_nonfinite=skip)."""

    def step_stats(self) -> dict[str, torch.Tensor]:
        """Detached 0-dim tensors about the last forward, logged beside the loss (none by default)."""
        return {}


class StoredNegatives(Dictionary):
    """A dictionary whose negatives are stored keys that know the dataset index of their image (the queue, the
    memory bank). It can remove from a query's negatives the stale keys of the query's own image (`mask_own_keys`:
    with K a sizeable fraction of the dataset N, a query meets one of them with probability about K/N) and cancel
    likely false negatives (models/false_negatives.py). Subclasses set `self._own` (N×K bool, the slots holding the
    query's own image) in `positive_keys`, or leave it None when the images' indices are unknown."""

    needs_indices = True  # the identities of the keys

    def __init__(self, mask_own_keys: bool = False, cancellation: FalseNegativeCancellation | None = None) -> None:
        super().__init__()
        self.mask_own_keys = mask_own_keys
        self.cancellation = cancellation
        if cancellation is not None:  # steps ended so far, for the cancellation's start step (checkpointed)
            self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self._own: torch.Tensor | None = None

    def _logits_against(self, q: torch.Tensor, k: torch.Tensor, negatives: torch.Tensor, temperature: float
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits N×(1+K), targets) of queries q against their positives k and the stored `negatives` (K×C)."""
        own = self._own if self.mask_own_keys else None
        logits, targets = logits_with_queue(q, k, negatives, temperature, exclude=own)  # the positive in column 0
        if self.cancellation is not None:
            chosen = self.cancellation.select(k, negatives, own, self.steps)  # N×K
            logits, targets = self.cancellation.apply(logits, targets, chosen)
        return logits, targets

    def _count_step(self) -> None:
        if self.cancellation is not None:
            self.steps.add_(1)

    def step_stats(self) -> dict[str, torch.Tensor]:
        if self._own is None:
            return {}
        return {"own_key_rate": self._own.any(dim=1).float().mean()}  # queries that met a key of their own image


class BatchNegatives(Dictionary):
    """MoCo v3: the keys of the other images of the global batch are the negatives; no state."""

    name = "batch"

    def positive_keys(self, model, view1, view2, indices, symmetric):
        with torch.no_grad():  # both views' keys in view order, as the official v3; (P·N)×C each
            k1, k2 = (distributed.all_gather_concat(k) for k in model.momentum_keys(view1, view2))
        return [k2, k1]

    def logits(self, q, k, temperature):
        return logits_in_batch(q, k, temperature, distributed.rank())  # N×(P·N)

    def loss_scale(self, temperature: float) -> float:
        return 2 * temperature  # ctr(q, k)·2T: see mocokit/losses.py, batch_contrastive_loss


class EndToEnd(Dictionary):
    """Figure 2a: negatives from the current (global) batch; keys from the query encoder, with gradients.
    Consistent keys, but K = batch − 1: the dictionary is as large as the batch."""

    name = "end_to_end"
    needs_key_encoder = False

    def queries_and_keys(self, model, view1, view2, indices, symmetric):
        # Each query, then its key: both pass through the query encoder, whose BatchNorm running statistics take
        # the batches in this order (view 1, view 2 shuffled, then view 2, view 1 shuffled when symmetric).
        directions = ((view1, view2), (view2, view1)) if symmetric else ((view1, view2),)
        queries, keys = [], []
        for query_view, key_view in directions:
            queries += model.queries(query_view)
            keys.append(self._global_keys(self._keys_with_gradient(model, key_view)))  # (P·N)×C
        return queries, keys

    def positive_keys(self, model, view1, view2, indices, symmetric):
        key_views = (view2, view1) if symmetric else (view2,)
        return [self._global_keys(self._keys_with_gradient(model, x)) for x in key_views]  # (P·N)×C each

    def logits(self, q, k, temperature):
        return logits_in_batch(q, k, temperature, distributed.rank())  # N×(P·N), K = P·N − 1 negatives

    @staticmethod
    def _keys_with_gradient(model: MoCo, x: torch.Tensor) -> torch.Tensor:
        """N×C unit keys from the query encoder. With shuffle BN the batch is permuted across this process's BN
        groups (a differentiable index, so the gradient reaches the keys); across processes the images stay where
        they are (a differentiable cross-process shuffle is not implemented), so use model.bn_splits > 1 per process
        when shuffle BN should act."""
        if not model.shuffles_keys:
            return F.normalize(model.encoder(x), dim=1)
        permutation = torch.randperm(x.shape[0], device=x.device)
        keys = F.normalize(model.encoder(x[permutation]), dim=1)  # N×C in permuted order
        return keys[torch.argsort(permutation)]  # row i is the key of x[i]

    @staticmethod
    def _global_keys(local: torch.Tensor) -> torch.Tensor:
        """(P·N)×C: every rank's keys in rank order, this rank's rows keeping their gradient (the others' are
        constants here: their gradients are computed on their own ranks, and DDP averages the parameter gradients)."""
        if distributed.world_size() == 1:
            return local
        gathered = distributed.all_gather_concat(local.detach())
        n, rank = local.shape[0], distributed.rank()
        return torch.cat([gathered[: rank * n], local, gathered[(rank + 1) * n :]])
