import math

import pytest
import torch
import torch.nn.functional as F

from mocokit.knn import knn_accuracy, knn_scores


def slow_knn_scores(bank, labels, queries, classes, k, temperature):
    out = torch.zeros(len(queries), classes, dtype=torch.float64)
    for qi, q in enumerate(queries):
        sims = sorted(((float(q @ b), int(labels[j])) for j, b in enumerate(bank)), reverse=True)[:k]
        for sim, label in sims:
            out[qi, label] += math.exp(sim / temperature)
    return out


@pytest.mark.parametrize("k,temperature", [(1, 0.1), (5, 0.1), (20, 0.5), (200, 0.07)])
def test_weighted_knn_equals_slow_reference(k, temperature):
    bank = F.normalize(torch.randn(50, 8, dtype=torch.float64), dim=1)
    labels = torch.randint(0, 4, (50,))
    queries = F.normalize(torch.randn(13, 8, dtype=torch.float64), dim=1)
    scores = knn_scores(bank, labels, queries, 4, k, temperature, chunk_size=5)
    torch.testing.assert_close(scores, slow_knn_scores(bank, labels, queries, 4, min(k, 50), temperature))


def test_accuracy_on_separable_clusters_and_top5():
    centres = F.normalize(torch.randn(6, 16), dim=1) * 10
    labels = torch.arange(6).repeat_interleave(20)
    bank = centres[labels] + torch.randn(120, 16)
    query_labels = torch.arange(6).repeat(3)
    top1, top5 = knn_accuracy(bank, labels, centres[query_labels] + torch.randn(18, 16), query_labels, 6, k=10)
    assert top1 == 1.0 and top5 == 1.0
    shuffled = labels[torch.randperm(120)]  # labels unrelated to the features: top-1 near chance
    top1, top5 = knn_accuracy(bank, shuffled, torch.randn(600, 16), torch.randint(0, 6, (600,)), 6, k=10)
    assert top1 < 0.3 and top5 >= top1
