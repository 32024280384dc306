import math

import pytest

from mocokit.reporting import find_dips, find_spikes


def _noisy(n: int, level: float = 1.0) -> list[float]:
    """A smooth, slowly decaying curve with ±10% deterministic wiggle."""
    return [level * (1 + 0.1 * math.sin(i)) * math.exp(-i / 200) for i in range(n)]


def test_injected_spike_is_found_and_only_it():
    values = _noisy(100)
    values[60] *= 8
    assert find_spikes(values, window=20, factor=5) == [60]


def test_smooth_or_slowly_growing_curve_has_no_spikes():
    assert find_spikes(_noisy(300), window=20, factor=5) == []
    growing = [1.02 ** i for i in range(300)]  # ×380 overall, but never ×5 within the window
    assert find_spikes(growing, window=20, factor=5) == []


def test_spike_threshold_is_relative_to_the_median_of_the_previous_window():
    values = [1.0] * 10 + [4.9, 5.1]
    assert find_spikes(values, window=5, factor=5) == [11]


def test_first_points_are_not_judged_without_enough_history():
    assert find_spikes([1.0, 100.0, 1.0, 1.0, 100.0], window=10, factor=5, min_history=3) == [4]
    assert find_spikes([1.0, 100.0], window=10, factor=5, min_history=1) == [1]


def test_non_finite_and_missing_values_are_ignored_and_keep_indices():
    values = [1.0, 1.0, math.nan, 1.0, None, math.inf, 1.0, 20.0]
    assert find_spikes(values, window=5, factor=5) == [7]


def test_dip_in_a_rising_knn_curve_is_found():
    knn = [0.30, 0.42, 0.50, 0.56, 0.60, 0.50, 0.63, 0.64]
    assert find_dips(knn) == [5]
    assert find_spikes(knn, window=3, factor=1.05) != [5]


def test_rising_or_flat_curve_has_no_dips():
    assert find_dips([0.3, 0.4, 0.5, 0.55, 0.58, 0.6, 0.6, 0.61]) == []
    assert find_dips([0.5] * 10) == []


@pytest.mark.parametrize("kwargs", [{"window": 0, "factor": 5}, {"window": 5, "factor": 1.0},
                                    {"window": 5, "factor": 5, "min_history": 0}])
def test_bad_arguments_are_rejected(kwargs):
    with pytest.raises(ValueError):
        find_spikes([1.0, 2.0], **kwargs)
