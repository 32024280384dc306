"""The memory bank: random unit entries at start, K sampled negatives, entries refreshed by blending."""

import pytest
import torch
import torch.nn.functional as F

from mocokit.models.memory_bank import MemoryBank


def test_entries_start_as_unit_vectors_and_negatives_are_rows_of_the_bank():
    torch.manual_seed(0)
    bank = MemoryBank(dataset_size=50, dim=8, negatives=12)
    assert torch.allclose(bank.features.norm(dim=1), torch.ones(50))
    negatives = bank.sample_negatives()
    assert negatives.shape == (12, 8)
    matches = (negatives[:, None] == bank.features[None]).all(-1)  # 12×50
    assert matches.any(1).all()  # every negative is some stored entry
    assert "features" in bank.state_dict()  # checkpoints carry the bank


def test_update_blends_only_the_sampled_images_with_momentum_and_renormalises():
    torch.manual_seed(0)
    bank = MemoryBank(dataset_size=10, dim=4, negatives=3, momentum=0.5)
    before = bank.features.clone()
    indices = torch.tensor([2, 7])
    queries = F.normalize(torch.randn(2, 4), dim=1)
    bank.update_(indices, queries)
    expected = F.normalize(0.5 * before[indices] + 0.5 * queries, dim=1)
    torch.testing.assert_close(bank.features[indices], expected)
    untouched = [i for i in range(10) if i not in (2, 7)]
    assert torch.equal(bank.features[untouched], before[untouched])
    torch.testing.assert_close(bank.positives(indices), expected)


def test_a_bank_needs_images_and_negatives():
    with pytest.raises(ValueError, match="memory bank"):
        MemoryBank(dataset_size=1, dim=4, negatives=3)
