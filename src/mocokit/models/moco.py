"""Momentum Contrast, one training step per `forward(view1, view2)`.

MoCo v1/v2 (He et al. 2020; Chen et al. 2020): negatives from a queue of past keys, InfoNCE loss.
MoCo v3 (Chen, Xie, He 2021): negatives from the rest of the global batch, symmetric loss, predictor on the query side.

In training mode `forward` does the whole algorithm step except the optimiser's: the momentum update of the key
encoder (before the keys are computed, as in the official code) and, for v1/v2, the enqueue of this step's keys
(after the loss is computed). In eval mode it only computes the loss and leaves the key encoder and queue alone.

What makes the step cheap without changing it: the momentum update is a few fused foreach kernels; the loss reads
the queue buffer itself and the enqueue is written in place after the backward (no K×C copy per step, see
models/queue.py); backbones without batch statistics (ViT) encode both views in one call; nothing reads a value
back to the host.
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
        # Views may share one backbone call only when no layer computes batch statistics (ViT: LayerNorm only). It
        # pays on GPUs (half the kernel launches, larger matrix products); on a 2-core CPU it measured no faster than
        # separate calls at best, and 20% slower when glibc hands the 2N-image activations fresh pages every step.
        self.batch_views = not has_batch_statistics(backbone)
        self.batch_views_on = ("cuda",)  # device types on which the views then share one call

    @property
    def backbone(self) -> nn.Module:
        """The query encoder's backbone: the network users keep after pretraining."""
        return self.encoder.backbone

    def forward(
        self, view1: torch.Tensor, view2: torch.Tensor, momentum: float | torch.Tensor | None = None,
        indices: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """view1, view2: N×3×H×W, two augmentations of the same N images. momentum: m for this step (a float, or a
        0-dim tensor so that a changing m neither recompiles a compiled model nor syncs). Returns {"loss",
        "accuracy"} (scalars; accuracy is the instance-discrimination top-1, detached). Run the backward of a step
        before the next forward (v1/v2 write the queue in place then, see models/queue.py). indices: the images'
        dataset indices, used only by the memory-bank dictionary (models/dictionaries.py)."""
        m = self.momentum if momentum is None else momentum
        if self.training:
            momentum_update_(self.momentum_encoder, self.encoder, m)  # before the keys, as the official order
        if self.queue is not None:
            return self._queue_step(view1, view2)
        return self._batch_step(view1, view2)

    # ---------------------------------------------------------------------------------------------- v1 / v2

    def _queue_step(self, x1: torch.Tensor, x2: torch.Tensor) -> dict[str, torch.Tensor]:
        # The negatives are the queue as it was before this step: the K×C buffer itself, no copy. This step's keys
        # are only staged by enqueue_ below and written in place after this step's backward (see models/queue.py).
        negatives = self.queue.negatives()  # K×C
        positive_first = torch.zeros(x1.shape[0], dtype=torch.long, device=x1.device)  # the target class of each row
        if self.symmetric:  # swap the views too; both terms see the same (old) queue and each key is enqueued once
            q1, q2 = self._queries(x1, x2)  # N×C each, from the query encoder
            k2, k1 = self._keys_per_view(x2, x1)  # N×C each, the positives (no gradient)
            loss_12, logits_12 = info_nce_with_queue(q1, k2, negatives, self.temperature)  # N×(1+K) logits
            loss_21, logits_21 = info_nce_with_queue(q2, k1, negatives, self.temperature)
            loss = loss_12 + loss_21
            accuracy = (contrastive_accuracy(logits_12, positive_first)
                        + contrastive_accuracy(logits_21, positive_first)) / 2
            keys = torch.cat([k1, k2], dim=0)  # 2N×C
        else:
            (q1,) = self._queries(x1)  # N×C queries from view 1
            k2 = self._keys(x2)  # N×C positive keys from view 2 (no gradient)
            loss, logits = info_nce_with_queue(q1, k2, negatives, self.temperature)  # N×(1+K) logits
            accuracy = contrastive_accuracy(logits, positive_first)
            keys = k2
        if self.training:
            self.queue.enqueue_(distributed.all_gather_concat(keys))  # every rank enqueues the same global keys
        return {"loss": loss, "accuracy": accuracy}

    def _queries(self, *views: torch.Tensor) -> list[torch.Tensor]:
        """Unit queries N×C per view from the query encoder."""
        return [F.normalize(z, dim=1) for z in self._encode(self.encoder, views)]

    @torch.no_grad()
    def _keys(self, x: torch.Tensor) -> torch.Tensor:
        """Unit keys N×C of one view from the momentum encoder, with shuffle BN when enabled."""
        return self._keys_per_view(x)[0]

    @torch.no_grad()
    def _keys_per_view(self, *views: torch.Tensor) -> list[torch.Tensor]:
        """Unit keys N×C per view from the momentum encoder, with shuffle BN when enabled. Shuffle BN guards against
        shared batch statistics; a backbone without them (see `batch_views`) needs no shuffle."""
        if not self.shuffle_bn or self.batch_views:
            return [F.normalize(z, dim=1) for z in self._encode(self.momentum_encoder, views)]
        keys = []
        for x in views:  # one call per view: each view's key batch is shuffled across its own BN groups
            x_shuffled, unshuffle_index = shuffle_batch(x)  # this rank's slice of the permuted global batch
            k = F.normalize(self.momentum_encoder(x_shuffled), dim=1)  # N×C, in shuffled order
            keys.append(unshuffle_batch(k, unshuffle_index))  # N×C, row i is the key of x[i]
        return keys

    def _encode(self, encoder: nn.Module, views: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        """encoder(x) (N×dim) for each view. When the backbone has no batch statistics (and on the device types
        of `batch_views_on`), all views go through it in one batched call: V·N images, fewer and larger kernels;
        exact, since each image is then computed on its own. With BatchNorm each view keeps its own call, as in the
        official code: batching would normalise the views with joint statistics and change the algorithm. Heads
        always see one view at a time (v3 heads have BN)."""
        if self.batch_views and len(views) > 1 and views[0].device.type in self.batch_views_on:
            features = encoder.backbone(torch.cat(views)).chunk(len(views))  # (V·N)×D -> V × (N×D)
            return [encoder.head(f) for f in features]
        return [encoder(x) for x in views]

    # ---------------------------------------------------------------------------------------------- v3

    def _batch_step(self, x1: torch.Tensor, x2: torch.Tensor) -> dict[str, torch.Tensor]:
        q1, q2 = (F.normalize(self.predictor(z), dim=1) for z in self._encode(self.encoder, (x1, x2)))  # N×C each
        with torch.no_grad():
            k1, k2 = (distributed.all_gather_concat(F.normalize(z, dim=1))  # (P·N)×C each
                      for z in self._encode(self.momentum_encoder, (x1, x2)))
        rank = distributed.rank()
        loss_12, logits_12 = batch_contrastive_loss(q1, k2, self.temperature, rank)  # N×(P·N) logits
        loss_21, logits_21 = batch_contrastive_loss(q2, k1, self.temperature, rank)
        targets = torch.arange(q1.shape[0], device=q1.device) + rank * q1.shape[0]
        accuracy = (contrastive_accuracy(logits_12, targets) + contrastive_accuracy(logits_21, targets)) / 2
        return {"loss": loss_12 + loss_21, "accuracy": accuracy}


def has_batch_statistics(module: nn.Module) -> bool:
    """Whether some layer of `module` normalises with statistics of the batch in training (any BatchNorm)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())
