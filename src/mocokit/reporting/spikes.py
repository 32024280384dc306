"""Outliers in a training curve, relative to its own recent past: gradient-norm spikes (ViT instability) and
kNN dips (collapse or a bad learning-rate phase). Pure functions over a sequence of numbers."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def _ratio_outliers(values: Sequence[float | None], window: int, factor: float, min_history: int,
                    above: bool) -> list[int]:
    if window < 1 or min_history < 1:
        raise ValueError(f"window and min_history must be >= 1, got {window} and {min_history}")
    if factor <= 1:
        raise ValueError(f"factor must be > 1 (a ratio to the rolling median), got {factor}")
    flagged: list[int] = []
    history: list[float] = []  # the finite values before index i, oldest first
    for i, value in enumerate(values):
        if value is None or not math.isfinite(value):
            continue
        recent = history[-window:]
        if len(recent) >= min_history:
            median = statistics.median(recent)
            if (value > factor * median) if above else (value < median / factor):
                flagged.append(i)
        history.append(value)
    return flagged


def find_spikes(values: Sequence[float | None], window: int = 20, factor: float = 5.0,
                min_history: int = 3) -> list[int]:
    """Indices i where values[i] > factor × the median of the (up to) `window` finite values before i.

    Promises: a point needs at least `min_history` earlier finite values to be judged, so the first points are
    never flagged; None and non-finite values are neither flagged nor used as history (callers detect NaN /
    inf themselves with `math.isfinite`); flagged values stay in the history of later points, so a lasting
    jump is flagged only until it dominates the window. Values are expected to be positive (norms, losses)."""
    return _ratio_outliers(values, window, factor, min_history, above=True)


def find_dips(values: Sequence[float | None], window: int = 3, factor: float = 1.05,
              min_history: int = 2) -> list[int]:
    """Indices i where values[i] < the median of the (up to) `window` finite values before i, divided by
    `factor` (factor 1.05: more than ~5% below the recent median). The mirror image of `find_spikes`, with the
    same promises; meant for curves that should rise, such as kNN accuracy per epoch."""
    return _ratio_outliers(values, window, factor, min_history, above=False)
