"""The supervised loop pieces: top-k counts, tensor batches, one epoch (lr scales, non-finite guard)."""

import pytest
import torch
from torch import nn

from mocokit.errors import NonFiniteLoss
from mocokit.evaluation.supervised import evaluate, tensor_batches, topk_correct, train_epoch


def test_topk_correct_equals_a_slow_count():
    logits, targets = torch.randn(50, 7), torch.randint(0, 7, (50,))
    slow = [sum(int(t in row.argsort(descending=True)[:k].tolist()) for row, t in zip(logits, targets))
            for k in (1, 5)]
    assert topk_correct(logits, targets) == slow
    assert topk_correct(torch.randn(5, 3), torch.zeros(5, dtype=torch.long), (5,)) == [5]  # k capped at C


def test_tensor_batches_cover_every_row_once_shuffled_by_the_generator():
    x, y = torch.arange(10.0)[:, None], torch.arange(10)
    batches = list(tensor_batches(x, y, 4, torch.Generator().manual_seed(0)))
    assert [len(b[1]) for b in batches] == [4, 4, 2]
    seen = torch.cat([b[1] for b in batches])
    assert sorted(seen.tolist()) == list(range(10)) and seen.tolist() != list(range(10))
    assert all(torch.equal(bx[:, 0].long(), by) for bx, by in batches)


def test_an_epoch_learns_separable_data_and_applies_each_groups_lr_scale():
    x = torch.randn(64, 2)
    y = (x[:, 0] > 0).long()
    model = nn.Linear(2, 2)
    optimizer = torch.optim.SGD([{"params": [model.weight]}, {"params": [model.bias], "lr_scale": 0.5}], lr=0.0)
    for epoch in range(20):
        stats = train_epoch(model, tensor_batches(x, y, 16), optimizer, lambda s: 0.5, epoch * 4, torch.device("cpu"))
    assert stats.steps == 4 and evaluate(model, tensor_batches(x, y, 16), torch.device("cpu"))[0] > 0.9
    assert [g["lr"] for g in optimizer.param_groups] == [0.5, 0.25]


def test_a_non_finite_loss_stops_before_the_step_with_the_hint():
    model = nn.Linear(2, 2)
    before = model.weight.detach().clone()
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    batches = [(torch.full((4, 2), float("inf")), torch.zeros(4, dtype=torch.long))]
    with pytest.raises(NonFiniteLoss, match=r"at step 8 \(lr 30\)\. use feature_norm"):
        train_epoch(model, batches, optimizer, lambda s: 30.0, 7, torch.device("cpu"),
                    nonfinite_hint="use feature_norm")
    assert torch.equal(model.weight, before)
