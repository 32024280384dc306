"""False-negative cancellation and own-key masking against slow per-query references, and the whole model with
them: options off give the recorded algorithm (tests/regression), on they change only what they should."""

import math

import pytest
import torch
import torch.nn.functional as F

from mocokit.losses import info_nce
from mocokit.models import ModelConfig, build_model
from mocokit.models.false_negatives import FalseNegativeCancellation

TINY = dict(backbone="resnet18", width=0.125, cifar_stem=True, dim=8, bn_splits=2)


def unit(*shape):
    return F.normalize(torch.randn(*shape, dtype=torch.float64), dim=-1)


def slow_top_k(k, negatives, excluded, top_k):
    """For each positive key, the indices of the top_k most similar negatives not excluded (a sort per row)."""
    chosen = []
    for i in range(k.shape[0]):
        scores = [(float(k[i] @ negatives[j]), j) for j in range(negatives.shape[0]) if not excluded[i, j]]
        chosen.append({j for _, j in sorted(scores, reverse=True)[:top_k]})
    return chosen


@pytest.mark.parametrize("top_k", [1, 3])
def test_the_chosen_negatives_are_the_most_similar_to_the_positive_and_never_excluded_ones(top_k):
    k, negatives = unit(4, 6), unit(12, 6)
    excluded = torch.zeros(4, 12, dtype=torch.bool)
    excluded[0, :5] = excluded[3, 11] = True
    rule = FalseNegativeCancellation("eliminate", top_k)
    chosen = rule.select(k, negatives, excluded, steps_done=torch.tensor(0))
    assert [set(torch.nonzero(row).flatten().tolist()) for row in chosen] == slow_top_k(k, negatives, excluded,
                                                                                          top_k)


def test_nothing_is_cancelled_before_the_start_step():
    rule = FalseNegativeCancellation("eliminate", 2, start_step=5)
    k, negatives = unit(3, 4), unit(8, 4)
    assert not rule.select(k, negatives, None, torch.tensor(4)).any()
    assert rule.select(k, negatives, None, torch.tensor(5)).sum() == 3 * 2


def test_eliminate_removes_the_chosen_negatives_and_attract_makes_them_positives():
    logits = torch.randn(2, 5, dtype=torch.float64)
    targets = torch.zeros(2, dtype=torch.long)
    chosen = torch.tensor([[False, True, False, False], [True, False, False, True]])  # over the 4 negatives
    eliminated, same_targets = FalseNegativeCancellation("eliminate", 1).apply(logits, targets, chosen)
    assert same_targets is targets
    for i in range(2):  # slow: drop the chosen columns, cross-entropy on what is left
        kept = [logits[i, 0].item()] + [logits[i, 1 + j].item() for j in range(4) if not chosen[i, j]]
        expected = -math.log(math.exp(kept[0]) / sum(math.exp(v) for v in kept))
        assert F.cross_entropy(eliminated[i:i + 1], targets[i:i + 1]).item() == pytest.approx(expected, rel=1e-9)
    attracted, positives = FalseNegativeCancellation("attract", 1).apply(logits, targets, chosen)
    assert torch.equal(attracted, logits)
    assert positives.tolist() == [[True, False, True, False, False], [True, True, False, False, True]]
    row = logits[1]
    slow = -sum(math.log(math.exp(row[j].item()) / row.exp().sum().item()) for j in (0, 1, 4)) / 3
    assert info_nce(attracted[1:], positives[1:]).item() == pytest.approx(slow, rel=1e-9)


def views(n=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 16, 16, generator=generator), torch.randn(n, 3, 16, 16, generator=generator)


@pytest.mark.parametrize("dictionary", ["queue", "memory_bank"])
def test_masking_changes_the_loss_exactly_when_a_query_meets_its_own_key(dictionary):
    """A fresh queue holds no image's key: masked and unmasked losses are equal. The memory bank's draw of K=48 rows
    of 64 hits some of the batch's own rows: there the masked loss differs."""
    results, met = [], []
    for mask in (False, True):
        torch.manual_seed(0)
        model = build_model(ModelConfig(version="v2", queue_size=48, dictionary=dictionary, mask_own_keys=mask,
                                        **TINY), dataset_size=64).train()
        torch.manual_seed(1)
        results.append(model(*views(), indices=torch.arange(8))["loss"].item())
        met.append(bool(model.dictionary.step_stats()["own_key_rate"] > 0))
    assert met[0] == met[1] == (dictionary == "memory_bank")
    assert (results[0] == results[1]) == (not met[0])


def test_the_queue_remembers_which_image_each_key_came_from_and_masks_it_the_next_time():
    torch.manual_seed(0)
    model = build_model(ModelConfig(version="v2", queue_size=16, symmetric=True, **TINY)).train()
    indices = torch.tensor([3, 4, 5, 6, 7, 8, 9, 10])
    x1, x2 = views()
    model(x1, x2, indices=indices)["loss"].backward()
    model.end_step()
    assert model.queue.ids[:16].tolist() == indices.tolist() * 2  # view 1's keys, then view 2's: the same images
    out = model(x1, x2, indices=indices)
    assert out["own_key_rate"].item() == 1.0  # every image now meets its two stale keys
    torch.manual_seed(0)
    unmasked = build_model(ModelConfig(version="v2", queue_size=16, symmetric=True, mask_own_keys=False, **TINY))
    unmasked.load_state_dict(model.state_dict())
    unmasked.train()
    assert unmasked(x1, x2, indices=indices)["loss"].item() != pytest.approx(out["loss"].item())


@pytest.mark.parametrize("mode", ["eliminate", "attract"])
def test_cancellation_trains_end_to_end_and_counts_its_steps(mode):
    torch.manual_seed(0)
    model = build_model(ModelConfig(version="v2", queue_size=16, false_negatives=mode, false_negative_top_k=2,
                                    false_negative_start_step=1, **TINY)).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(3):
        out = model(*views(seed=step), indices=torch.arange(8) + 8 * step)
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        model.end_step()
        assert torch.isfinite(out["loss"])
    assert int(model.queue.steps) == 3 and "queue.steps" in model.state_dict()


def test_the_options_are_refused_where_they_cannot_apply():
    with pytest.raises(ValueError, match="stored negatives"):
        ModelConfig(version="v3", false_negatives="eliminate")
    with pytest.raises(ValueError, match="stored negatives"):
        ModelConfig(version="v2", dictionary="end_to_end", false_negatives="attract")
    with pytest.raises(ValueError, match="one positive"):
        ModelConfig(version="v2", false_negatives="attract", loss="debiased")
    with pytest.raises(ValueError, match="tau_plus"):
        ModelConfig(version="v2", loss="debiased", tau_plus=1.0)
