"""Seeds: at a scale with `Experiment.medium_seeds` every variant runs once per seed, each run in its own folder,
and the table, results.json and figures report per variant the mean over its seeds and their spread (min-max).
Pure functions over `VariantResult`s; the runner and the plots call them."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from mocokit.experiments.spec import Variant, VariantResult


def run_name(slug: str, seed: int | None) -> str:
    """The run folder of one seed of a variant: `<slug>` for an unseeded run, `<slug>-seed-<seed>` otherwise."""
    return slug if seed is None else f"{slug}-seed-{seed}"


@dataclass(frozen=True)
class Spread:
    mean: float
    low: float  # the smallest value over the seeds
    high: float  # the largest
    n: int  # runs with a value

    @property
    def width(self) -> float:
        """high - low: the seed spread."""
        return self.high - self.low

    def record(self) -> dict[str, float | int]:
        return {"mean": self.mean, "min": self.low, "max": self.high, "spread": self.width, "n": self.n}


@dataclass
class Summary:
    """One variant over its seeds: its runs in seed order and, per numeric field of their rows, the Spread."""

    variant: Variant
    runs: list[VariantResult]
    values: dict[str, Spread] = field(default_factory=dict)

    @property
    def seeds(self) -> list[int | None]:
        return [r.seed for r in self.runs]

    def record(self) -> dict[str, Any]:
        return {"label": self.variant.label, "series": self.variant.series, "x": self.variant.x,
                "seeds": self.seeds, "runs": [r.run_dir.name for r in self.runs],
                **{name: spread.record() for name, spread in self.values.items()}}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return None if math.isnan(value) else float(value)


def spread(values: list[Any]) -> Spread | None:
    """Mean, min and max of the numbers among `values` (None, NaN and non-numbers skipped); None when none."""
    numbers = [n for n in map(_number, values) if n is not None]
    if not numbers:
        return None
    return Spread(sum(numbers) / len(numbers), min(numbers), max(numbers), len(numbers))


def summarise(results: list[VariantResult]) -> list[Summary]:
    """The results grouped by variant label, in the order of first appearance, each with the Spread of every
    numeric field of the runs' rows (kNN top-1, accuracies, minutes, the evaluation's numbers), seeds excluded."""
    groups: dict[str, list[VariantResult]] = {}
    for result in results:
        groups.setdefault(result.variant.label, []).append(result)
    summaries = []
    for runs in groups.values():
        runs = sorted(runs, key=lambda r: -1 if r.seed is None else r.seed)
        rows = [r.row() for r in runs]
        names = [name for name in rows[0] if name not in ("seed", "x")]
        values = {name: s for name in names if (s := spread([row.get(name) for row in rows])) is not None}
        summaries.append(Summary(runs[0].variant, runs, values))
    return summaries


def seeded(results: list[VariantResult]) -> bool:
    """Whether any run belongs to a seeded scale (the table then shows means and spreads)."""
    return any(r.seed is not None for r in results)
