"""Momentum Contrast, one training step per `forward(view1, view2)`.

MoCo v1/v2 (He et al. 2020; Chen et al. 2020): negatives from a queue of past keys, InfoNCE loss.
MoCo v3 (Chen, Xie, He 2021): negatives from the rest of the global batch, symmetric loss, predictor on the query side.

In training mode `forward` does the whole algorithm step except the optimiser's: the momentum update of the key
encoder (before the keys are computed, as in the official code) and, for v1/v2, the enqueue of this step's keys
(after the loss is computed). In eval mode it only computes the loss and leaves the key encoder and queue alone.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from mocokit import distributed
from mocokit.losses import batch_contrastive_loss, contrastive_accuracy, info_nce_with_queue
from mocokit.models.momentum import make_momentum_copy, momentum_update_
from mocokit.models.queue import KeyQueue
from mocokit.models.shuffle_bn import shuffle_batch, unshuffle_batch


class MoCo(nn.Module):
    def __init__(
        self,
        backbone: nn.Module,
        head: nn.Module,
        predictor: nn.Module | None,
        *,
        dim: int,
        temperature: float,
        momentum: float,
        queue_size: int | None,
        symmetric: bool = False,
        shuffle_bn: bool = False,
    ) -> None:
        """backbone: images -> N×D (`num_features` = D); head: N×D -> N×dim (v1 linear, v2 MLP, v3 projector);
        predictor: v3 only, N×dim -> N×dim on the query side. queue_size: K for v1/v2, None for v3."""
        super().__init__()
        self.encoder = nn.Sequential(OrderedDict(backbone=backbone, head=head))  # f_q
        self.momentum_encoder = make_momentum_copy(self.encoder)  # f_k: same init, updated only by EMA
        self.predictor = predictor
        self.queue = KeyQueue(queue_size, dim) if queue_size else None
        self.temperature = temperature
        self.momentum = momentum  # default m when `forward` is not given one (v3 engines pass the schedule's value)
        self.symmetric = symmetric or self.queue is None  # v3's loss is always symmetric
        self.shuffle_bn = shuffle_bn

    @property
    def backbone(self) -> nn.Module:
        """The query encoder's backbone: the network users keep after pretraining."""
        return self.encoder.backbone

    def forward(
        self, view1: torch.Tensor, view2: torch.Tensor, momentum: float | None = None
    ) -> dict[str, torch.Tensor]:
        """view1, view2: N×3×H×W, two augmentations of the same N images. Returns {"loss", "accuracy"} (scalars;
        accuracy is the instance-discrimination top-1, detached)."""
        m = self.momentum if momentum is None else momentum
        if self.training:
            momentum_update_(self.momentum_encoder, self.encoder, m)  # before the keys, as the official order
        if self.queue is not None:
            return self._queue_step(view1, view2)
        return self._batch_step(view1, view2)

    # ---------------------------------------------------------------------------------------------- v1 / v2

    def _queue_step(self, x1: torch.Tensor, x2: torch.Tensor) -> dict[str, torch.Tensor]:
        q1 = F.normalize(self.encoder(x1), dim=1)  # N×C queries from view 1
        k2 = self._keys(x2)  # N×C positive keys from view 2 (no gradient)
        # The negatives are the queue as it was before this step. The enqueue below writes in place while autograd
        # still needs these values for the backward pass, hence the copy (K×C, e.g. 32 MB for K=65536).
        negatives = self.queue.keys.clone()  # K×C
        loss, logits = info_nce_with_queue(q1, k2, negatives, self.temperature)  # N×(1+K) logits
        positive_first = torch.zeros(q1.shape[0], dtype=torch.long, device=q1.device)  # the target class of each row
        accuracy = contrastive_accuracy(logits, positive_first)
        keys = k2
        if self.symmetric:  # swap the views; both terms see the same (old) queue and each key is enqueued once
            q2 = F.normalize(self.encoder(x2), dim=1)
            k1 = self._keys(x1)
            loss_21, logits_21 = info_nce_with_queue(q2, k1, negatives, self.temperature)
            loss = loss + loss_21
            accuracy = (accuracy + contrastive_accuracy(logits_21, positive_first)) / 2
            keys = torch.cat([k1, k2], dim=0)  # 2N×C
        if self.training:
            self.queue.enqueue_(distributed.all_gather_concat(keys))  # every rank enqueues the same global keys
        return {"loss": loss, "accuracy": accuracy}

    @torch.no_grad()
    def _keys(self, x: torch.Tensor) -> torch.Tensor:
        """Unit keys N×C from the momentum encoder, with shuffle BN when enabled."""
        if not self.shuffle_bn:
            return F.normalize(self.momentum_encoder(x), dim=1)
        x_shuffled, unshuffle_index = shuffle_batch(x)  # this rank's slice of the permuted global batch
        k = F.normalize(self.momentum_encoder(x_shuffled), dim=1)  # N×C, in shuffled order
        return unshuffle_batch(k, unshuffle_index)  # N×C, row i is the key of x[i]

    # ---------------------------------------------------------------------------------------------- v3

    def _batch_step(self, x1: torch.Tensor, x2: torch.Tensor) -> dict[str, torch.Tensor]:
        q1 = F.normalize(self.predictor(self.encoder(x1)), dim=1)  # N×C
        q2 = F.normalize(self.predictor(self.encoder(x2)), dim=1)  # N×C
        with torch.no_grad():
            k1 = distributed.all_gather_concat(F.normalize(self.momentum_encoder(x1), dim=1))  # (P·N)×C
            k2 = distributed.all_gather_concat(F.normalize(self.momentum_encoder(x2), dim=1))  # (P·N)×C
        rank = distributed.rank()
        loss_12, logits_12 = batch_contrastive_loss(q1, k2, self.temperature, rank)  # N×(P·N) logits
        loss_21, logits_21 = batch_contrastive_loss(q2, k1, self.temperature, rank)
        targets = torch.arange(q1.shape[0], device=q1.device) + rank * q1.shape[0]
        accuracy = (contrastive_accuracy(logits_12, targets) + contrastive_accuracy(logits_21, targets)) / 2
        return {"loss": loss_12 + loss_21, "accuracy": accuracy}
