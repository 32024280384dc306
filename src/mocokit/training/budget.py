"""The arithmetic of a time budget (train.time_budget): how many steps fit, given what the run has measured.

Pure functions of plain numbers, so that the plan can be checked by hand; the engine (engine/budget.py) measures
the numbers and applies the plan. A run with a budget ends at `total_steps`, which need not be a whole number of
epochs; its work is

    what is spent before the plan (setup, baselines, the measuring steps)
  + (total_steps - steps_done) x seconds_per_step                      the remaining training steps
  + the epoch ends between steps_done and total_steps                  kNN / health when due, a checkpoint
  + the final end at total_steps                                       kNN, health and a checkpoint, always
  + a safety margin                                                     (MARGIN_FRACTION of the budget)

and `plan_total_steps` returns the largest total whose work fits in the budget.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

# Kept free at the end: for the closing (report.html and its matplotlib plots take a few seconds on a small CPU) and
# for steps slower than the measured ones (a busy machine).
MARGIN_FRACTION = 0.02
MARGIN_MIN_S = 5.0


def safety_margin(budget_s: float) -> float:
    """Seconds of the budget kept free: MARGIN_FRACTION of it, at least MARGIN_MIN_S (never more than a tenth)."""
    return min(max(MARGIN_FRACTION * budget_s, MARGIN_MIN_S), 0.1 * budget_s)


@dataclass(frozen=True)
class EvaluationCosts:
    """What the work at an epoch end costs, in seconds, and how often each part is due (0: never)."""

    knn_s: float = 0.0  # one kNN evaluation (0 without a kNN monitor)
    health_s: float = 0.0  # one label-free health measurement (0 without a health monitor)
    checkpoint_s: float = 0.0  # one checkpoint written
    knn_every: int = 0  # monitor.knn_every_epochs (0: no kNN monitor)
    health_every: int = 0  # monitor.health_every_epochs (0: no health monitor)
    checkpoint_every_steps: int = 0  # run.checkpoint_every_steps (0: only at epoch ends)

    def final_s(self) -> float:
        """The run's last end (at total_steps): kNN, health and a checkpoint, whatever the cadences."""
        return (self.knn_s if self.knn_every else 0.0) + (self.health_s if self.health_every else 0.0) \
            + self.checkpoint_s


def multiples_between(first_step: int, last_step: int, period: int) -> int:
    """How many steps k·period (k >= 1) lie in [first_step, last_step): the ends still to come after the step
    `first_step` ran (the plan is made right after a step, before its epoch end) and before the run's end at
    `last_step` (counted apart, as the final end)."""
    first = max(first_step, 1)
    return max((last_step - 1) // period - (first - 1) // period, 0)


def evaluation_seconds(first_step: int, last_step: int, steps_per_epoch: int, costs: EvaluationCosts) -> float:
    """Predicted seconds of the work from the step `first_step` (done) to the run's end at `last_step`: the epoch
    ends in between (kNN and health when due, a checkpoint each), the periodic checkpoints
    (run.checkpoint_every_steps; counted even where they fall on an epoch end: a slight over-estimate), and the
    final end."""
    seconds = multiples_between(first_step, last_step, steps_per_epoch) * costs.checkpoint_s + costs.final_s()
    if costs.knn_every:
        seconds += multiples_between(first_step, last_step, steps_per_epoch * costs.knn_every) * costs.knn_s
    if costs.health_every:
        seconds += multiples_between(first_step, last_step, steps_per_epoch * costs.health_every) * costs.health_s
    if costs.checkpoint_every_steps:
        seconds += multiples_between(first_step, last_step, costs.checkpoint_every_steps) * costs.checkpoint_s
    return seconds


def plan_total_steps(budget_s: float, elapsed_s: float, steps_done: int, seconds_per_step: float,
                     steps_per_epoch: int, costs: EvaluationCosts, margin_s: float) -> int:
    """The largest total number of steps T >= steps_done such that

        elapsed_s + (T - steps_done) x seconds_per_step + evaluation_seconds(steps_done, T) + margin_s <= budget_s,

    or steps_done when not even one more step fits (the run then ends at once, with its final evaluations). The
    left side grows with T, so the largest T is found by bisection."""
    if seconds_per_step <= 0:
        raise ValueError(f"seconds_per_step must be > 0, got {seconds_per_step}")

    def fits(total: int) -> bool:
        work = (total - steps_done) * seconds_per_step + evaluation_seconds(steps_done, total, steps_per_epoch, costs)
        return elapsed_s + work + margin_s <= budget_s

    low = steps_done  # the answer when nothing fits
    high = steps_done + max(math.floor((budget_s - elapsed_s - margin_s) / seconds_per_step), 0)  # no evaluations
    while low < high:  # invariant: the answer is in [low, high]; `low` fits or is steps_done
        middle = (low + high + 1) // 2
        if fits(middle):
            low = middle
        else:
            high = middle - 1
    return low


@dataclass(frozen=True)
class BudgetPlan:
    """A run's fixed plan: kept in its checkpoints (as `to_record()`), so that a resumed run follows it."""

    budget_s: float  # train.time_budget, in seconds, of the invocation that planned
    total_steps: int  # the run ends after this global step
    steps_per_epoch: int
    seconds_per_step: float  # measured, data loading included
    measured_from: int  # the first measured step (1-based, global); the step before it was not measured (warm-up)
    measured_to: int  # the last measured step: the plan was fixed after it
    setup_s: float  # seconds from the command's start to the first step: setup, baselines, probes
    elapsed_s: float  # seconds from the command's start to the plan
    training_s: float  # predicted seconds of the training steps still to run at the plan
    evaluation_s: float  # predicted seconds of the kNN and health evaluations still to come at the plan
    checkpoints_s: float  # predicted seconds of the checkpoints still to come at the plan
    knn_evaluations: int  # kNN evaluations still to come at the plan (the final one included)
    knn_s: float  # the predicted seconds of one kNN evaluation
    health_s: float  # ... of one health measurement
    checkpoint_s: float  # ... of one checkpoint
    margin_s: float  # kept free (safety_margin)

    @property
    def epochs(self) -> float:
        """The run's length in epochs (the last one may be partial): the cosine schedule's end."""
        return self.total_steps / self.steps_per_epoch

    @property
    def planned_s(self) -> float:
        """The predicted wall time of the whole run (the budget less the unused part of the margin)."""
        return self.elapsed_s + self.training_s + self.evaluation_s + self.checkpoints_s

    def to_record(self) -> dict[str, Any]:
        """Plain numbers (a checkpoint payload, a metrics record)."""
        return asdict(self)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> BudgetPlan:
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in record.items() if key in known})


def make_plan(budget_s: float, elapsed_s: float, setup_s: float, steps_done: int, measured: tuple[int, int],
              seconds_per_step: float, steps_per_epoch: int, costs: EvaluationCosts) -> BudgetPlan:
    """The plan after measuring steps `measured` (first, last; steps_done == last): `plan_total_steps` with the
    safety margin, and the predictions it rests on."""
    margin = safety_margin(budget_s)
    total = plan_total_steps(budget_s, elapsed_s, steps_done, seconds_per_step, steps_per_epoch, costs, margin)
    knn = 0
    if costs.knn_every:
        knn = multiples_between(steps_done, total, steps_per_epoch * costs.knn_every) + 1
    checkpoints_only = EvaluationCosts(checkpoint_s=costs.checkpoint_s,
                                       checkpoint_every_steps=costs.checkpoint_every_steps)
    checkpoints_s = evaluation_seconds(steps_done, total, steps_per_epoch, checkpoints_only)
    return BudgetPlan(
        budget_s=budget_s, total_steps=total, steps_per_epoch=steps_per_epoch, seconds_per_step=seconds_per_step,
        measured_from=measured[0], measured_to=measured[1], setup_s=setup_s, elapsed_s=elapsed_s,
        training_s=(total - steps_done) * seconds_per_step,
        evaluation_s=evaluation_seconds(steps_done, total, steps_per_epoch, costs) - checkpoints_s,
        checkpoints_s=checkpoints_s, knn_evaluations=knn,
        knn_s=costs.knn_s, health_s=costs.health_s, checkpoint_s=costs.checkpoint_s, margin_s=margin,
    )
