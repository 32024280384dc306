"""Few-label subsets (mocokit.data.labels) and the data.label_fraction field."""

from collections import Counter

import pytest

from mocokit.data.labels import stratified_indices
from mocokit.errors import ConfigError
from mocokit.training.run_config import load_config

LABELS = [0] * 500 + [1] * 300 + [2] * 195 + [3] * 5 + [-1] * 7  # unbalanced, one tiny class, unlabelled items


@pytest.mark.parametrize("fraction", [0.01, 0.1, 0.5, 1.0])
def test_each_class_keeps_its_share_and_at_least_one_item(fraction):
    chosen = stratified_indices(LABELS, fraction, seed=0)
    counts = Counter(LABELS[i] for i in chosen)
    totals = Counter(label for label in LABELS if label >= 0)
    assert counts == {c: max(1, round(fraction * n)) for c, n in totals.items()}
    assert chosen == sorted(set(chosen)) and -1 not in counts


def test_the_subset_is_reproducible_and_depends_on_the_seed():
    assert stratified_indices(LABELS, 0.1, seed=3) == stratified_indices(LABELS, 0.1, seed=3)
    assert stratified_indices(LABELS, 0.1, seed=3) != stratified_indices(LABELS, 0.1, seed=4)


def test_a_class_pick_does_not_depend_on_the_other_classes():
    alone = stratified_indices([0] * 100, 0.1, seed=1)
    mixed = stratified_indices([0] * 100 + [1] * 50, 0.1, seed=1)
    assert [i for i in mixed if i < 100] == alone


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5])
def test_fractions_outside_0_1_are_refused(fraction):
    with pytest.raises(ValueError, match="fraction"):
        stratified_indices(LABELS, fraction, seed=0)
    with pytest.raises(ConfigError, match=r"data.label_fraction must be in \(0, 1\]"):
        load_config("v2-cifar10", [f"data.label_fraction={fraction}"])


def test_label_fraction_is_a_config_field():
    assert load_config("v2-cifar10", ["data.label_fraction=0.01"]).data.label_fraction == 0.01
    assert load_config("v2-cifar10").data.label_fraction is None
