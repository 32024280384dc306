import math

import pytest
import torch
import torch.nn.functional as F

from mocokit.losses import batch_contrastive_loss, contrastive_accuracy, info_nce_in_batch, info_nce_with_queue


def unit(*shape):
    return F.normalize(torch.randn(*shape, dtype=torch.float64), dim=-1)


def slow_info_nce(q, k, queue, temperature):
    """The MoCo paper's loss, one query at a time: -log(exp(q·k+/T) / (exp(q·k+/T) + Σ_j exp(q·k_j/T)))."""
    total = 0.0
    for i in range(q.shape[0]):
        positive = math.exp(float(q[i] @ k[i]) / temperature)
        negatives = sum(math.exp(float(q[i] @ queue[j]) / temperature) for j in range(queue.shape[0]))
        total += -math.log(positive / (positive + negatives))
    return total / q.shape[0]


def slow_v3_loss(q, k_global, temperature, rank):
    """MoCo v3's ctr(q, k)·2T: query i's positive is global key rank·N + i, the other global keys are negatives."""
    n = q.shape[0]
    total = 0.0
    for i in range(n):
        scores = [math.exp(float(q[i] @ k_global[j]) / temperature) for j in range(k_global.shape[0])]
        total += -math.log(scores[rank * n + i] / sum(scores))
    return total / n * 2 * temperature


@pytest.mark.parametrize("n,queue_size,temperature", [(1, 1, 0.07), (4, 10, 0.07), (8, 33, 0.2), (5, 64, 1.0)])
def test_info_nce_equals_slow_loop(n, queue_size, temperature):
    q, k, queue = unit(n, 16), unit(n, 16), unit(queue_size, 16)
    loss, logits = info_nce_with_queue(q, k, queue, temperature)
    assert logits.shape == (n, 1 + queue_size)
    assert loss.item() == pytest.approx(slow_info_nce(q, k, queue, temperature), rel=1e-9)


@pytest.mark.parametrize("n,ranks,temperature", [(1, 1, 0.2), (4, 1, 0.2), (3, 2, 1.0), (6, 3, 0.1)])
def test_batch_loss_equals_slow_loop_on_every_rank(n, ranks, temperature):
    k_global = unit(n * ranks, 8)
    for rank in range(ranks):
        q = unit(n, 8)
        loss, logits = batch_contrastive_loss(q, k_global, temperature, rank)
        assert logits.shape == (n, n * ranks)
        assert loss.item() == pytest.approx(slow_v3_loss(q, k_global, temperature, rank), rel=1e-9)


@pytest.mark.parametrize("n,ranks,temperature", [(4, 1, 0.07), (3, 2, 0.2)])
def test_end_to_end_loss_is_the_batch_loss_without_the_2t_factor(n, ranks, temperature):
    k_global = unit(n * ranks, 8)
    q = unit(n, 8)
    loss, logits = info_nce_in_batch(q, k_global, temperature, rank=ranks - 1)
    assert logits.shape == (n, n * ranks)
    assert loss.item() == pytest.approx(slow_v3_loss(q, k_global, temperature, ranks - 1) / (2 * temperature),
                                        rel=1e-9)


@pytest.mark.parametrize("queue_size", [1, 7, 4096])
def test_identical_embeddings_give_log_k_plus_one(queue_size):
    # Every logit equals 1/T: the (1+K)-way softmax is uniform, whatever T.
    u = unit(1, 32)
    q, k, queue = u.expand(6, 32), u.expand(6, 32), u.expand(queue_size, 32)
    for temperature in (0.07, 0.2, 1.0):
        loss, _ = info_nce_with_queue(q, k, queue, temperature)
        assert loss.item() == pytest.approx(math.log(queue_size + 1), rel=1e-9)


@pytest.mark.parametrize("n,ranks", [(2, 1), (8, 1), (4, 4)])
def test_identical_embeddings_give_2t_log_global_batch(n, ranks):
    u = unit(1, 32)
    for temperature in (0.2, 1.0):
        loss, _ = batch_contrastive_loss(u.expand(n, 32), u.expand(n * ranks, 32), temperature, rank=ranks - 1)
        assert loss.item() == pytest.approx(2 * temperature * math.log(n * ranks), rel=1e-9)


def test_2t_factor_makes_the_logit_gradient_independent_of_temperature():
    # d loss / d (q·k) = 2T · (1/T) · (softmax − onehot) / N = 2 (softmax − onehot) / N, so
    # d loss / d q = 2 (softmax − onehot) k / N: no 1/T factor, T enters only through the softmax.
    k = unit(4, 8)
    for temperature in (0.1, 1.0):
        q = unit(4, 8).requires_grad_(True)
        batch_contrastive_loss(q, k, temperature)[0].backward()
        softmax = torch.softmax(q.detach() @ k.T / temperature, dim=1)
        torch.testing.assert_close(q.grad, 2 * (softmax - torch.eye(4, dtype=k.dtype)) @ k / 4)


def test_accuracy_counts_rows_whose_argmax_is_the_target():
    logits = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0], [0.0, 1.0, 5.0], [9.0, 0.0, 0.0]])
    assert contrastive_accuracy(logits, torch.tensor([0, 1, 1, 2])).item() == pytest.approx(0.5)
