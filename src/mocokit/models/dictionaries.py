"""The two dictionaries MoCo is compared with (He et al. 2020, figure 2 and figure 3), with MoCo's encoder, heads and
InfoNCE loss, so that only the source of the keys differs (`model.dictionary`):

- `EndToEnd` (figure 2a): the keys are the other images of the current batch, encoded by the query encoder itself
  with gradients through both sides. Consistent keys, but K = batch - 1: the dictionary is as large as the batch.
- `MemoryBankMoCo` (figure 2b, Wu et al. 2018): one stored feature per dataset image; K negatives are drawn from the
  bank and the positive is the image's own stored feature. Large K, but keys written by encoders of many past steps.

Neither uses the momentum encoder (it is kept, unused, so that checkpoints and exports look like MoCo's).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mocokit import distributed
from mocokit.losses import contrastive_accuracy, info_nce_in_batch, info_nce_with_queue
from mocokit.models.memory_bank import MemoryBank
from mocokit.models.moco import MoCo


class EndToEnd(MoCo):
    """Negatives from the current (global) batch; keys from the query encoder, with gradients."""

    def __init__(self, *args, symmetric: bool = False, **kwargs) -> None:
        super().__init__(*args, queue_size=None, symmetric=symmetric, **kwargs)
        self.symmetric = symmetric  # MoCo sets it for v3 when there is no queue; here it is the config's choice

    def forward(self, view1: torch.Tensor, view2: torch.Tensor, momentum=None,
                indices: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        rank = distributed.rank()
        (q1,) = self._queries(view1)  # N×C
        k2 = self._global_keys(self._keys_with_gradient(view2))  # (P·N)×C
        loss, logits = info_nce_in_batch(q1, k2, self.temperature, rank)  # N×(P·N), K = P·N - 1 negatives
        targets = torch.arange(q1.shape[0], device=q1.device) + rank * q1.shape[0]
        accuracy = contrastive_accuracy(logits, targets)
        if self.symmetric:
            (q2,) = self._queries(view2)
            k1 = self._global_keys(self._keys_with_gradient(view1))
            loss_21, logits_21 = info_nce_in_batch(q2, k1, self.temperature, rank)
            loss = loss + loss_21
            accuracy = (accuracy + contrastive_accuracy(logits_21, targets)) / 2
        return {"loss": loss, "accuracy": accuracy}

    def _keys_with_gradient(self, x: torch.Tensor) -> torch.Tensor:
        """N×C unit keys from the query encoder. With shuffle BN the batch is permuted across this process's BN
        groups (a differentiable index, so the gradient reaches the keys); across processes the images stay where
        they are (a differentiable cross-process shuffle is not implemented), so use model.bn_splits > 1 per process
        when shuffle BN should act."""
        if not self.shuffle_bn or self.batch_views:
            return F.normalize(self.encoder(x), dim=1)
        permutation = torch.randperm(x.shape[0], device=x.device)
        keys = F.normalize(self.encoder(x[permutation]), dim=1)  # N×C in permuted order
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


class MemoryBankMoCo(MoCo):
    """Negatives drawn from a memory bank of one feature per dataset image; needs the images' dataset indices."""

    def __init__(self, *args, memory_bank: MemoryBank, symmetric: bool = False, **kwargs) -> None:
        super().__init__(*args, queue_size=None, symmetric=symmetric, **kwargs)
        self.symmetric = symmetric  # MoCo sets it for v3 when there is no queue; here it is the config's choice
        self.memory_bank = memory_bank

    def forward(self, view1: torch.Tensor, view2: torch.Tensor, momentum=None,
                indices: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if indices is None:
            raise ValueError("model.dictionary=memory_bank needs the dataset index of every image: "
                             "call model(view1, view2, indices=...)")
        positives = self.memory_bank.positives(indices)  # N×C: each image's stored feature
        negatives = self.memory_bank.sample_negatives()  # K×C
        (q1,) = self._queries(view1)
        loss, logits = info_nce_with_queue(q1, positives, negatives, self.temperature)  # N×(1+K)
        positive_first = torch.zeros(q1.shape[0], dtype=torch.long, device=q1.device)
        accuracy = contrastive_accuracy(logits, positive_first)
        stored = q1.detach()
        if self.symmetric:  # the second view queries the same entries
            (q2,) = self._queries(view2)
            loss_2, logits_2 = info_nce_with_queue(q2, positives, negatives, self.temperature)
            loss = loss + loss_2
            accuracy = (accuracy + contrastive_accuracy(logits_2, positive_first)) / 2
            stored = F.normalize(stored + q2.detach(), dim=1)
        if self.training:
            self.memory_bank.update_(indices, stored)  # after the loss: this step read the entries as they were
        return {"loss": loss, "accuracy": accuracy}
