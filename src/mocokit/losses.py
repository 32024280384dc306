"""MoCo's losses as pure functions of L2-normalised embeddings.

`info_nce_with_queue` is the v1/v2 loss (positive key + K negatives from the queue, or from a memory bank);
`batch_contrastive_loss` is the v3 loss (the other keys of the global batch are the negatives), one direction of the
symmetric pair; `info_nce_in_batch` is the same without v3's 2T factor (the end-to-end dictionary).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def info_nce_with_queue(
    q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """InfoNCE with a queue (MoCo v1/v2, He et al. 2020, Algorithm 1).

    q: N×C queries, k: N×C positive keys, queue: K×C negative keys; all rows unit vectors.
    Returns (loss, logits): the mean cross-entropy of the (1+K)-way classification whose correct class is 0 (the
    positive), and the N×(1+K) logits (for the instance-discrimination accuracy).
    """
    l_pos = (q * k).sum(dim=1, keepdim=True)  # N×1
    l_neg = q @ queue.T  # N×K
    logits = torch.cat([l_pos, l_neg], dim=1) / temperature  # N×(1+K)
    targets = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)  # the positive is class 0
    return F.cross_entropy(logits, targets), logits


def batch_contrastive_loss(
    q: torch.Tensor, k_global: torch.Tensor, temperature: float, rank: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """One direction of the MoCo v3 loss (Chen, Xie, He 2021, Algorithm 1): ctr(q, k) · 2T.

    q: N×C local queries; k_global: (P·N)×C keys gathered from all P ranks in rank order; rows are unit vectors.
    Query i of this rank has its positive at row rank·N + i; every other key of the global batch is a negative.
    Returns (loss, logits N×(P·N)).

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
    (figure 2a), and the v3 loss without its 2T factor. Shapes and positives as in `batch_contrastive_loss`; returns
    (mean cross-entropy, logits N×(P·N))."""
    logits = q @ k_global.T / temperature  # N×(P·N)
    targets = torch.arange(q.shape[0], device=q.device) + rank * q.shape[0]  # positives on the rank's diagonal
    return F.cross_entropy(logits, targets), logits


def contrastive_accuracy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Top-1 instance-discrimination accuracy (a detached 0-dim tensor, so reading it costs no sync until logged)."""
    return (logits.detach().argmax(dim=1) == targets).float().mean()
