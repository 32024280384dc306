"""MoCo's contrastive losses as pure functions of L2-normalised embeddings.

A loss is two steps: a dictionary turns queries and keys into logits N×M with the column of each row's positive
(`logits_with_queue` for v1/v2 and the memory bank, `logits_in_batch` for v3 and the end-to-end dictionary), then a
loss from `LOSSES` maps (logits, targets) to a scalar. A new loss is one function and one entry in `LOSSES`.

The composed forms `info_nce_with_queue` (v1/v2), `batch_contrastive_loss` (v3, one direction of the symmetric pair,
with its 2T factor) and `info_nce_in_batch` (end-to-end) are the papers' definitions, kept for readers and tests.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def logits_with_queue(
    q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """q: N×C queries, k: N×C positive keys, queue: K×C negative keys; all rows unit vectors.
    Returns (logits N×(1+K), targets N): [q·k⁺, q·queueᵀ] / T, the positive in column 0 (He et al. 2020, Alg. 1)."""
    l_pos = (q * k).sum(dim=1, keepdim=True)  # N×1
    l_neg = q @ queue.T  # N×K
    logits = torch.cat([l_pos, l_neg], dim=1) / temperature  # N×(1+K)
    targets = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)  # the positive is class 0
    return logits, targets


def logits_in_batch(
    q: torch.Tensor, k_global: torch.Tensor, temperature: float, rank: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """q: N×C local queries; k_global: (P·N)×C keys gathered from all P ranks in rank order; unit rows.
    Returns (logits N×(P·N), targets N): q·kᵀ / T; query i of this rank has its positive at column rank·N + i and
    every other key of the global batch is a negative (Chen, Xie, He 2021, Alg. 1; the end-to-end dictionary)."""
    logits = q @ k_global.T / temperature  # N×(P·N)
    targets = torch.arange(q.shape[0], device=q.device) + rank * q.shape[0]  # positives on the rank's diagonal
    return logits, targets


def info_nce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """InfoNCE: the mean cross-entropy of classifying each row's positive among its logits (already divided by T)."""
    return F.cross_entropy(logits, targets)


# model.loss -> the function of (logits N×M, targets N) it names
LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {"infonce": info_nce}


def info_nce_with_queue(
    q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """InfoNCE with a queue (MoCo v1/v2, He et al. 2020, Algorithm 1). Shapes as `logits_with_queue`.
    Returns (loss, logits N×(1+K))."""
    logits, targets = logits_with_queue(q, k, queue, temperature)
    return info_nce(logits, targets), logits


def batch_contrastive_loss(
    q: torch.Tensor, k_global: torch.Tensor, temperature: float, rank: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """One direction of the MoCo v3 loss (Chen, Xie, He 2021, Algorithm 1): ctr(q, k) · 2T. Shapes as
    `logits_in_batch`; returns (loss, logits N×(P·N)).

    Why 2T: d(CE)/d(logit) scales with 1/T, so multiplying by T makes the gradient with respect to the raw
    similarity q·k independent of the temperature (the factor 2 is the paper's convention). It keeps the effective
    learning rate comparable across temperatures; keep it, as the official code does.
    """
    loss, logits = info_nce_in_batch(q, k_global, temperature, rank)
    return loss * (2 * temperature), logits


def info_nce_in_batch(
    q: torch.Tensor, k_global: torch.Tensor, temperature: float, rank: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """InfoNCE whose negatives are the other keys of the global batch: the end-to-end dictionary of the MoCo paper
    (figure 2a), and the v3 loss without its 2T factor. Returns (mean cross-entropy, logits N×(P·N))."""
    logits, targets = logits_in_batch(q, k_global, temperature, rank)
    return info_nce(logits, targets), logits


def contrastive_accuracy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Top-1 instance-discrimination accuracy (a detached 0-dim tensor, so reading it costs no sync until logged)."""
    return (logits.detach().argmax(dim=1) == targets).float().mean()
