"""Weighted k-nearest-neighbour classification (Wu et al. 2018, Instance Discrimination), the standard online
monitor of self-supervised training: cosine similarity to a bank of training features, the k nearest vote with
weights exp(similarity / τ), summed per class."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F


class KnnScore(NamedTuple):
    """kNN accuracies in [0, 1] (a named tuple: `top1, top5 = score` also reads it)."""

    top1: float
    top5: float


def knn_scores(
    bank: torch.Tensor,
    bank_labels: torch.Tensor,
    queries: torch.Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """bank: M×D and queries: Q×D unit rows; bank_labels: M ints in [0, num_classes). Returns Q×num_classes
    summed weights. Queries are processed in chunks so the Q×M similarity matrix is never whole in memory."""
    k = min(k, bank.shape[0])
    scores = []
    for chunk in queries.split(chunk_size):
        similarity = chunk @ bank.T  # q×M cosine similarities
        top_similarity, top_index = similarity.topk(k, dim=1)  # q×k
        weights = (top_similarity / temperature).exp()  # q×k
        votes = F.one_hot(bank_labels[top_index], num_classes).to(weights.dtype)  # q×k×classes
        scores.append((votes * weights.unsqueeze(-1)).sum(dim=1))  # q×classes
    return torch.cat(scores)


def knn_accuracy(
    bank: torch.Tensor,
    bank_labels: torch.Tensor,
    queries: torch.Tensor,
    query_labels: torch.Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
) -> KnnScore:
    """Top-1 and top-5 accuracy of the weighted kNN classifier; features are L2-normalised here."""
    scores = knn_scores(F.normalize(bank, dim=1), bank_labels, F.normalize(queries, dim=1), num_classes, k,
                        temperature)
    ranked = scores.argsort(dim=1, descending=True)
    top1 = (ranked[:, 0] == query_labels).float().mean().item()
    top5 = (ranked[:, : min(5, num_classes)] == query_labels[:, None]).any(dim=1).float().mean().item()
    return KnnScore(top1, top5)


def centred_knn_accuracy(
    bank: torch.Tensor,
    bank_labels: torch.Tensor,
    queries: torch.Tensor,
    query_labels: torch.Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
) -> KnnScore:
    """`knn_accuracy` after subtracting the bank's mean row from bank and queries alike: the pixel baseline
    (`features.pixel_features`), where the mean image would otherwise dominate every cosine similarity."""
    mean = bank.mean(dim=0, keepdim=True)  # 1×D
    return knn_accuracy(bank - mean, bank_labels, queries - mean, query_labels, num_classes, k, temperature)
