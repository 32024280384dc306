"""False-negative cancellation (Huynh et al., "Boosting Contrastive Self-Supervised Learning with False Negative
Cancellation", WACV 2022), for dictionaries with explicit negatives (the queue, the memory bank).

A queue of K keys over a dataset of classes holds, for every query, keys of other images of the same class: false
negatives that the loss pushes away. Per query, the `top_k` negatives most similar to its positive key are taken as
such (the positive is the best available stand-in for the image's class, without labels or extra support views) and
either removed from the softmax (`eliminate`) or counted as further positives (`attract`). Before `start_step` the
encoder is too young for its similarities to mean anything, so nothing is cancelled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

Mode = Literal["eliminate", "attract"]


@dataclass(frozen=True)
class FalseNegativeCancellation:
    mode: Mode
    top_k: int  # negatives taken as false per query
    start_step: int = 0  # steps (end_step calls) before it acts

    @torch.no_grad()
    def select(self, k: torch.Tensor, negatives: torch.Tensor, excluded: torch.Tensor | None,
               steps_done: torch.Tensor) -> torch.Tensor:
        """N×K bool: for each positive key (k: N×C) the `top_k` rows of `negatives` (K×C) most similar to it,
        among those not already `excluded` (N×K bool or None); all False while steps_done (0-dim) < start_step.
        No host sync: the start is a device comparison."""
        scores = k @ negatives.T  # N×K cosine similarities of the positive to each negative
        if excluded is not None:
            scores = scores.masked_fill(excluded, float("-inf"))
        top = scores.topk(min(self.top_k, negatives.shape[0]), dim=1).indices  # N×top_k
        chosen = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, top, True)
        if excluded is not None:
            chosen &= ~excluded  # a row with fewer than top_k candidates left picks no excluded slot
        return chosen & (steps_done >= self.start_step)

    def apply(self, logits: torch.Tensor, targets: torch.Tensor, chosen: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """logits N×(1+K) with the positive in column 0 and `chosen` N×K over the negative columns ->
        (logits, targets) with the chosen negatives removed (eliminate: −∞) or made positives (attract: targets
        become an N×(1+K) bool mask)."""
        chosen_columns = torch.cat([torch.zeros_like(chosen[:, :1]), chosen], dim=1)  # N×(1+K)
        if self.mode == "eliminate":
            return logits.masked_fill(chosen_columns, float("-inf")), targets
        positives = chosen_columns.clone()
        positives[:, 0] = True
        return logits, positives
