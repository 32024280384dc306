import math

import pytest
import torch
import torch.nn.functional as F

from mocokit.losses import (
    batch_contrastive_loss,
    contrastive_accuracy,
    debiased_info_nce,
    info_nce,
    info_nce_in_batch,
    info_nce_with_queue,
    logits_with_queue,
)


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


def slow_multi_positive(logits, positives):
    """−(1/|P|) Σ_{p∈P} log(e^{l_p} / Σ_j e^{l_j}) per row, averaged: the attraction loss, one row at a time."""
    total = 0.0
    for row, chosen in zip(logits.tolist(), positives.tolist()):
        finite = [math.exp(v) for v in row if v != float("-inf")]
        denominator = sum(finite)
        terms = [-math.log(math.exp(v) / denominator) for v, p in zip(row, chosen) if p]
        total += sum(terms) / len(terms)
    return total / len(logits)


def slow_debiased(logits, targets, tau_plus, temperature):
    """Chuang et al. 2020, eq. 9, one query at a time in plain floats (negatives at −∞ are not there)."""
    total = 0.0
    for row, target in zip(logits.tolist(), targets.tolist()):
        positive = math.exp(row[target])
        negatives = [math.exp(v) for j, v in enumerate(row) if j != target and v != float("-inf")]
        m = len(negatives)
        g = max((sum(negatives) / m - tau_plus * positive) / (1 - tau_plus), math.exp(-1 / temperature))
        total += -math.log(positive / (positive + m * g))
    return total / len(logits)


def test_an_excluded_negative_is_as_if_it_were_not_in_the_queue():
    q, k, queue = unit(4, 8), unit(4, 8), unit(10, 8)
    exclude = torch.zeros(4, 10, dtype=torch.bool)
    exclude[0, 3] = exclude[2, 7] = exclude[2, 8] = True
    logits, targets = logits_with_queue(q, k, queue, 0.2, exclude=exclude)
    loss = info_nce(logits, targets)
    expected = sum(slow_info_nce(q[i:i + 1], k[i:i + 1], queue[~exclude[i]], 0.2) for i in range(4)) / 4
    assert loss.item() == pytest.approx(expected, rel=1e-9)
    # and the gradient is that of the smaller queue: an excluded slot pulls nothing
    q0 = q[:1].clone().requires_grad_(True)
    info_nce(*logits_with_queue(q0, k[:1], queue, 0.2, exclude=exclude[:1])).backward()
    q1 = q[:1].clone().requires_grad_(True)
    info_nce(*logits_with_queue(q1, k[:1], queue[~exclude[0]], 0.2)).backward()
    torch.testing.assert_close(q0.grad, q1.grad)


@pytest.mark.parametrize("temperature", [0.07, 0.5])
def test_several_positives_per_row_equal_the_slow_attraction_loss(temperature):
    logits = torch.randn(5, 9, dtype=torch.float64) / temperature
    logits[1, 4] = float("-inf")  # an eliminated negative next to the attracted ones
    positives = torch.zeros(5, 9, dtype=torch.bool)
    positives[:, 0] = True
    positives[0, 2] = positives[3, 5] = positives[3, 6] = True
    assert info_nce(logits, positives).item() == pytest.approx(slow_multi_positive(logits, positives), rel=1e-9)
    single = torch.zeros(5, dtype=torch.long)  # one positive each: the plain cross-entropy
    only_first = torch.zeros_like(positives)
    only_first[:, 0] = True
    assert info_nce(logits, only_first).item() == pytest.approx(info_nce(logits, single).item(), rel=1e-12)


@pytest.mark.parametrize("tau_plus,temperature", [(0.0, 0.2), (0.1, 0.2), (0.3, 0.07), (0.1, 1.0)])
def test_debiased_loss_equals_the_papers_formula(tau_plus, temperature):
    q, k = unit(6, 8), unit(6, 8)
    logits, targets = logits_with_queue(q, k, unit(20, 8), temperature)
    logits = logits.clone()
    logits[2, 5] = float("-inf")  # a masked slot is not a negative
    value = debiased_info_nce(logits, targets, tau_plus, temperature)
    assert value.item() == pytest.approx(slow_debiased(logits, targets, tau_plus, temperature), rel=1e-9)


def test_debiased_with_no_class_prior_is_info_nce_unless_the_floor_binds():
    logits, targets = logits_with_queue(unit(6, 8), unit(6, 8), unit(20, 8), 0.2)
    # τ⁺ = 0: g is the negatives' mean, M·g their sum, i.e. InfoNCE, as long as that mean is above e^(−1/T)
    assert debiased_info_nce(logits, targets, 0.0, 0.2).item() == pytest.approx(info_nce(logits, targets).item(),
                                                                                rel=1e-9)


def test_debiased_gradient_on_the_positive_grows_with_the_number_of_negatives():
    # closed form, one row: loss = −l⁺ + log(e^l⁺ + M·g), g = (mean_neg e^l − τ⁺·e^l⁺)/(1 − τ⁺) above the floor, so
    # ∂loss/∂l⁺ = −1 + p·(1 − M·τ⁺/(1 − τ⁺)) with p = e^l⁺/(e^l⁺ + M·g): up to M·τ⁺/(1 − τ⁺) in size where
    # InfoNCE's (−1 + p) is at most 1. With a queue (M = 4,096, τ⁺ = 0.1) that is 455: why the medium
    # false-negatives run's debiased loss collapsed and trained with τ⁺ = 0.01 (docs/experiments.md).
    negatives, tau_plus, temperature = 4096, 0.1, 0.1
    negative_logits = torch.linspace(-1.0, 1.5, negatives, dtype=torch.float64)
    mean_negative = negative_logits.exp().mean().item()
    # the positive just below the point where τ⁺·e^l⁺ reaches the negatives' mean (where the loss is heading)
    positive_logit = math.log(0.999 * mean_negative / tau_plus)
    logits = torch.cat([torch.tensor([positive_logit], dtype=torch.float64), negative_logits])[None].requires_grad_()
    debiased_info_nce(logits, torch.tensor([0]), tau_plus, temperature).backward()
    exp_positive = math.exp(positive_logit)
    g = (mean_negative - tau_plus * exp_positive) / (1 - tau_plus)
    assert g > math.exp(-1 / temperature)  # above the floor: the formula holds
    p = exp_positive / (exp_positive + negatives * g)
    expected = -1 + p * (1 - negatives * tau_plus / (1 - tau_plus))
    assert logits.grad[0, 0].item() == pytest.approx(expected, rel=1e-9)
    assert abs(expected) > 100  # far beyond InfoNCE's bound of 1


def test_debiased_negatives_get_no_gradient_once_the_floor_binds():
    # the positive far above every negative: mean_neg e^l < τ⁺·e^l⁺, so g = e^(−1/T), a constant
    logits = torch.tensor([[5.0, -5.0, -4.0, -4.5]], dtype=torch.float64, requires_grad=True)
    debiased_info_nce(logits, torch.tensor([0]), 0.1, 0.2).backward()
    assert torch.equal(logits.grad[0, 1:], torch.zeros(3, dtype=torch.float64))
    assert logits.grad[0, 0].item() < 0


def test_accuracy_with_several_positives_counts_any_of_them():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.0]])
    positives = torch.tensor([[True, True, False], [False, False, True]])
    assert contrastive_accuracy(logits, positives).item() == 0.5
