"""Momentum Contrast: one training step is `out = model(view1, view2)`, `out["loss"].backward()`, the optimiser's
step, then `model.end_step()`.

MoCo v1/v2 (He et al. 2020; Chen et al. 2020): negatives from a queue of past keys, InfoNCE loss.
MoCo v3 (Chen, Xie, He 2021): negatives from the rest of the global batch, symmetric loss, predictor on the query side.

The model is an encoder f_q (backbone + head), a momentum encoder f_k (an EMA copy of f_q, when the dictionary needs
one), an optional predictor (v3) and a dictionary part (models/dictionaries.py) that supplies the keys, the negatives
and the targets. In training mode `forward` updates f_k (before the keys are computed, as the official code) and the
dictionary stages what the step writes into it; `end_step()` writes it once the backward has run (a step that is not
applied calls `discard_step()` instead). In eval mode `forward` only computes the loss and changes nothing.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from mocokit.losses import LOSSES, contrastive_accuracy
from mocokit.models.backbones import has_batch_statistics
from mocokit.models.dictionaries import Dictionary
from mocokit.models.momentum import make_momentum_copy, momentum_update_
from mocokit.models.shuffle_bn import shuffle_batch, unshuffle_batch


class MoCo(nn.Module):
    def __init__(
        self,
        backbone: nn.Module,
        head: nn.Module,
        predictor: nn.Module | None,
        dictionary: Dictionary,
        *,
        temperature: float,
        momentum: float,
        symmetric: bool = False,
        shuffle_bn: bool = False,
        loss: str = "infonce",
        loss_settings: dict | None = None,
        share_backbone_call: bool | None = None,
    ) -> None:
        """backbone: images -> N×D (`num_features` = D); head: N×D -> N×C (v1 linear, v2 MLP, v3 projector);
        predictor: v3 only, N×C -> N×C on the query side; dictionary: Queue (v1/v2), BatchNegatives (v3), EndToEnd
        or MemoryBank. symmetric: also swap the views and add the second loss term (v3 always). shuffle_bn: shuffle
        the key batch across BatchNorm groups. loss: a name in mocokit.losses.LOSSES, built with `loss_settings` (e.g.
        tau_plus) and the temperature. share_backbone_call: both views through the backbone in one call when it has
        no batch statistics (exact; fewer, larger kernels); None: on CUDA only, where it pays (README, Performance:
        on a 2-core CPU it measured no faster, and slower when the 2N-image activations get fresh pages)."""
        super().__init__()
        self.encoder = nn.Sequential(OrderedDict(backbone=backbone, head=head))  # f_q
        # f_k: same init, updated only by EMA
        self.momentum_encoder = make_momentum_copy(self.encoder) if dictionary.needs_key_encoder else None
        self.predictor = predictor
        self.add_module(dictionary.name, dictionary)  # as `queue` / `memory_bank`: the checkpoint keys of its state
        self._dictionary_name = dictionary.name
        self.temperature = temperature
        self.momentum = momentum  # default m when `forward` is not given one (v3 engines pass the schedule's value)
        self.symmetric = symmetric
        self.shuffle_bn = shuffle_bn
        self.loss_fn = LOSSES[loss](temperature=temperature, **(loss_settings or {}))  # (logits, targets) -> loss
        self.views_share_backbone = not has_batch_statistics(backbone)  # ViT (LayerNorm only): exact to batch views
        self.share_backbone_call = share_backbone_call

    @property
    def dictionary(self) -> Dictionary:
        return self._modules[self._dictionary_name]

    @property
    def backbone(self) -> nn.Module:
        """The query encoder's backbone: the network users keep after pretraining."""
        return self.encoder.backbone

    @property
    def needs_indices(self) -> bool:
        """Whether `forward` reads the images' dataset indices (the memory bank's rows, the queue's key identities);
        without them the queue stores unknown identities and masks nothing."""
        return self.dictionary.needs_indices

    @property
    def shuffles_keys(self) -> bool:
        """Whether key batches are shuffled across BatchNorm groups: shuffle BN on, and a backbone that has batch
        statistics to shuffle (ViT: none)."""
        return self.shuffle_bn and not self.views_share_backbone

    def forward(
        self, view1: torch.Tensor, view2: torch.Tensor, momentum: float | torch.Tensor | None = None,
        indices: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """view1, view2: N×3×H×W, two augmentations of the same N images. momentum: m for this step (a float, or a
        0-dim tensor so that a changing m neither recompiles a compiled model nor syncs). indices: the images'
        dataset indices (N, long), needed when `needs_indices`. Returns {"loss", "accuracy"} (scalars; accuracy is
        the instance-discrimination top-1, detached)."""
        if self.training and self.momentum_encoder is not None:  # f_k ← m·f_k + (1−m)·f_q, before the keys
            momentum_update_(self.momentum_encoder, self.encoder, self.momentum if momentum is None else momentum)
        # [q1(, q2)] unit queries N×C from f_q (and the predictor), [k2(, k1)] the positive key of each
        queries, keys = self.dictionary.queries_and_keys(self, view1, view2, indices, self.symmetric)
        loss_fn, scale = self.loss_fn, self.dictionary.loss_scale(self.temperature)
        terms, accuracies = [], []
        for q, k in zip(queries, keys):
            logits, targets = self.dictionary.logits(q, k, self.temperature)  # N×(1+K) or N×(P·N); targets N
            term = loss_fn(logits, targets)
            terms.append(term if scale is None else term * scale)
            accuracies.append(contrastive_accuracy(logits, targets))
        if self.training:
            self.dictionary.remember(queries, keys, indices)  # written by end_step, after the backward
        return {"loss": sum(terms), "accuracy": sum(accuracies) / len(accuracies), **self.dictionary.step_stats()}

    def end_step(self) -> None:
        """End a training step after its backward and optimiser step: write what the step's forwards staged into
        the dictionary (the queue's enqueue, the memory bank's update)."""
        self.dictionary.end_step()

    def discard_step(self) -> None:
        """End a training step that was not applied: nothing it staged is written."""
        self.dictionary.discard_step()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        if self.momentum_encoder is None:  # checkpoints of earlier versions carried one that this model never uses
            for key in [k for k in state_dict if k.startswith(prefix + "momentum_encoder.")]:
                del state_dict[key]
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def networks(self) -> list[nn.Module]:
        """The networks a step runs: the query encoder's backbone and head, the momentum encoder's (when there is
        one) and the predictor (v3). The rest of the step (momentum update, shuffle, logits, loss, dictionary) is
        small tensor work around them."""
        parts = [self.encoder.backbone, self.encoder.head]
        if self.momentum_encoder is not None:
            parts += [self.momentum_encoder.backbone, self.momentum_encoder.head]
        if self.predictor is not None:
            parts.append(self.predictor)
        return parts

    def queries(self, *views: torch.Tensor) -> list[torch.Tensor]:
        """Unit queries N×C per view: f_q, then the predictor (v3)."""
        embeddings = self._encode(self.encoder, views)
        if self.predictor is not None:
            embeddings = [self.predictor(z) for z in embeddings]
        return [F.normalize(z, dim=1) for z in embeddings]

    @torch.no_grad()
    def momentum_keys(self, *views: torch.Tensor) -> list[torch.Tensor]:
        """Unit keys N×C per view from the momentum encoder, no gradient. With shuffle BN each view's key batch is
        shuffled across the BatchNorm groups (of this process and, on several processes, across them), encoded,
        and unshuffled, so that no key shares batch statistics with its query."""
        if not self.shuffles_keys:
            return [F.normalize(z, dim=1) for z in self._encode(self.momentum_encoder, views)]
        keys = []
        for x in views:
            x_shuffled, unshuffle_index = shuffle_batch(x)  # this rank's slice of the permuted global batch
            k = F.normalize(self.momentum_encoder(x_shuffled), dim=1)  # N×C, in shuffled order
            keys.append(unshuffle_batch(k, unshuffle_index))  # N×C, row i is the key of x[i]
        return keys

    def _encode(self, encoder: nn.Module, views: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        """encoder(x) (N×C) for each view; all views in one backbone call when they may share it (no batch
        statistics; exact, since each image is then computed on its own). With BatchNorm each view keeps its own
        call, as the official code: batching would normalise the views with joint statistics and change the
        algorithm. Heads always see one view at a time (v3 heads have BN)."""
        share = self.share_backbone_call
        if share is None:
            share = views[0].device.type == "cuda"
        if share and self.views_share_backbone and len(views) > 1:
            features = encoder.backbone(torch.cat(views)).chunk(len(views))  # (V·N)×D -> V × (N×D)
            return [encoder.head(f) for f in features]
        return [encoder(x) for x in views]
