"""MoCo's contrastive losses as pure functions of L2-normalised embeddings.

A loss is two steps: a dictionary turns queries and keys into logits N×M with the column of each row's positive
(`logits_with_queue` for v1/v2 and the memory bank, `logits_in_batch` for v3 and the end-to-end dictionary), then a
loss from `LOSSES` maps (logits, targets) to a scalar: InfoNCE, or the debiased loss of Chuang et al. A new loss is
one function and one entry in `LOSSES`.

The composed forms `info_nce_with_queue` (v1/v2), `batch_contrastive_loss` (v3, one direction of the symmetric pair,
with its 2T factor) and `info_nce_in_batch` (end-to-end) are the papers' definitions, kept for readers and tests.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F


def logits_with_queue(
    q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float, exclude: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """q: N×C queries, k: N×C positive keys, queue: K×C negative keys; all rows unit vectors.
    Returns (logits N×(1+K), targets N): [q·k⁺, q·queueᵀ] / T, the positive in column 0 (He et al. 2020, Alg. 1).
    exclude: N×K bool, negatives removed from query i's softmax (their logit is −∞: exactly as if that slot were
    not in the queue), e.g. stale keys of the query's own image."""
    l_pos = (q * k).sum(dim=1, keepdim=True)  # N×1
    l_neg = q @ queue.T  # N×K
    if exclude is not None:
        l_neg = l_neg.masked_fill(exclude, float("-inf"))
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
    """InfoNCE: the mean cross-entropy of classifying each row's positive among its logits (already divided by T).
    targets: N column indices, or an N×M bool mask of several positives per row (false-negative attraction,
    Huynh et al. 2022): then the mean over each row's positives of −log softmax."""
    if targets.dtype != torch.bool:
        return F.cross_entropy(logits, targets)
    log_probability = F.log_softmax(logits, dim=1).masked_fill(~targets, 0.0)  # N×M, only the positives kept
    return (-log_probability.sum(dim=1) / targets.sum(dim=1)).mean()


def debiased_info_nce(logits: torch.Tensor, targets: torch.Tensor, tau_plus: float, temperature: float
                      ) -> torch.Tensor:
    """The debiased contrastive loss (Chuang et al., NeurIPS 2020, eq. 9): the negatives' mean exp-similarity
    corrected for the fraction τ⁺ of them that share the query's class,
        g = max((mean_neg e^l − τ⁺·e^l⁺) / (1 − τ⁺), e^(−1/T)),  loss = −log(e^l⁺ / (e^l⁺ + M·g)),
    with l = q·k/T the logits and M the number of negatives of the row (removed ones, at −∞, not counted)."""
    if targets.dtype == torch.bool:
        raise ValueError("the debiased loss takes one positive per query (not model.false_negatives=attract)")
    positive = logits.gather(1, targets[:, None])  # N×1
    is_negative = torch.ones_like(logits, dtype=torch.bool).scatter_(1, targets[:, None], False)
    is_negative &= torch.isfinite(logits)
    count = is_negative.sum(dim=1, keepdim=True)  # N×1, M per row
    # exp relative to the row's largest logit: the same ratio, no overflow at small T
    shift = logits.masked_fill(~torch.isfinite(logits), float("-inf")).amax(dim=1, keepdim=True).detach()
    exp_negative = torch.where(is_negative, (logits - shift).exp(), torch.zeros_like(logits))
    exp_positive = (positive - shift).exp()
    mean_negative = exp_negative.sum(dim=1, keepdim=True) / count
    floor = torch.exp(-1.0 / temperature - shift)  # e^(−1/T), on the same shifted scale
    g = torch.maximum((mean_negative - tau_plus * exp_positive) / (1.0 - tau_plus), floor)
    return -(exp_positive / (exp_positive + count * g)).log().mean()


# model.loss -> a builder of the function of (logits N×M, targets) it names, from the model's settings
LOSSES: dict[str, Callable[..., Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]] = {
    "infonce": lambda **settings: info_nce,
    "debiased": lambda tau_plus, temperature, **settings: functools.partial(
        debiased_info_nce, tau_plus=tau_plus, temperature=temperature),
}


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
    """Top-1 instance-discrimination accuracy (a detached 0-dim tensor, so reading it costs no sync until logged):
    the top logit is the positive, or one of them (targets an N×M bool mask)."""
    top = logits.detach().argmax(dim=1)
    if targets.dtype == torch.bool:
        return targets.gather(1, top[:, None]).float().mean()
    return (top == targets).float().mean()
