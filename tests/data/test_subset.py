"""data/subset.py: seeded subsets, and the pretraining subsets whose items carry their position as index."""

import pytest

from mocokit.data.subset import IndexedSubset, seeded_subset


class Items:
    """A pretraining-style dataset: item i is (f"image{i}", label, i); item 5 is unreadable and replaced by item 6."""

    def __len__(self):
        return 10

    def __getitem__(self, i):
        actual = 6 if i == 5 else i
        return f"image{actual}", actual % 2, actual


def test_a_seeded_subset_is_reproducible_sorted_and_the_whole_dataset_when_not_smaller():
    a, b = seeded_subset(Items(), 4, seed=3), seeded_subset(Items(), 4, seed=3)
    assert a.indices == b.indices == sorted(a.indices) and len(set(a.indices)) == 4
    dataset = Items()
    assert seeded_subset(dataset, None, 0) is dataset and seeded_subset(dataset, 10, 0) is dataset


def test_an_indexed_subset_reports_positions_in_the_subset_not_dataset_indices():
    subset = IndexedSubset(Items(), [1, 4, 6, 9])
    assert [subset[p] for p in range(4)] == [("image1", 1, 0), ("image4", 0, 1), ("image6", 0, 2), ("image9", 1, 3)]
    assert subset.__getitems__([3, 0]) == [("image9", 1, 3), ("image1", 1, 0)]


@pytest.mark.parametrize("indices, expected", [([2, 5, 6], 2), ([2, 5], 1)])
def test_a_replaced_unreadable_item_gets_the_position_of_its_replacement_or_else_its_own(indices, expected):
    # item 5 is unreadable and the dataset returns item 6 instead: position of 6 when 6 is in the subset
    subset = IndexedSubset(Items(), indices)
    assert subset[1] == ("image6", 0, expected)


def test_seeded_subset_indexed_builds_an_indexed_subset():
    subset = seeded_subset(Items(), 4, seed=0, indexed=True)
    assert isinstance(subset, IndexedSubset)
    assert [subset[p][2] for p in range(4)] == [0, 1, 2, 3]
