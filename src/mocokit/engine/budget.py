"""Where a run's wall time goes, and the time budget (train.time_budget) that fixes the run's length.

`TimeAccount` gives every second since the command started to exactly one category (setup, baselines, training,
evaluations, checkpoints): the one on top of a stack of `spending(category)` blocks when it passed, so that a
checkpoint written inside an epoch counts as a checkpoint, not as training.

`TimeBudget` measures and plans (the arithmetic is training/budget.py):
1. Before the first step the run knows what an evaluation costs: the random-init kNN baseline's time (or one timed
   kNN evaluation when no baseline is measured), one timed health measurement, the step-0 checkpoint's time.
2. The first step of the invocation is not measured (compilation, cuDNN autotuning, worker start-up); the next
   MEASURE_STEPS steps are, or fewer once they have taken MEASURE_FRACTION of the budget. Their time is the account's
   training time, so data loading is included and the epoch ends that fall among them (tiny datasets) are not.
3. After the last measured step the plan is fixed, once: `make_plan`. Until then the run's length counts as
   infinite: the warm-up runs as configured (it is in epochs, not a share of the run), the cosine has not begun to
   decay and v3's momentum is still m0, so those steps' values do not depend on the plan.
Under several processes rank 0 decides when the measurement ends and what the plan is, and every rank follows.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from mocokit import distributed
from mocokit.training.budget import BudgetPlan, EvaluationCosts, make_plan

MEASURE_STEPS = 20  # steps timed after the invocation's first one
MEASURE_FRACTION = 0.03  # ... or fewer, once they have taken this share of the budget (slow steps, short budgets)
CATEGORIES = ("setup", "baselines", "training", "evaluations", "checkpoints")


@dataclass
class Span:
    seconds: float = 0.0  # the block's wall time, once it has ended


class TimeAccount:
    """Seconds spent per category since `started` (a reading of `clock`), plus those of earlier invocations of the
    same run (`before`, from the checkpoint resumed)."""

    def __init__(self, started: float, clock: Callable[[], float] = time.perf_counter,
                 before: dict[str, float] | None = None) -> None:
        self.clock = clock
        self.spent = dict.fromkeys(CATEGORIES, 0.0)
        self.before = {name: float(before.get(name, 0.0)) for name in CATEGORIES} if before else None
        self._current, self._since = "setup", started

    def _charge(self) -> float:
        now = self.clock()
        self.spent[self._current] += now - self._since
        self._since = now
        return now

    @contextmanager
    def spending(self, category: str) -> Iterator[Span]:
        """The time inside the block counts as `category` (blocks nested in it count as theirs)."""
        span, outer = Span(), self._current
        start = self._charge()
        self._current = category
        try:
            yield span
        finally:
            span.seconds = self._charge() - start
            self._current = outer

    def seconds(self, category: str | None = None) -> float:
        """This invocation's seconds so far: in `category`, or in all of them."""
        self._charge()
        return self.spent[category] if category else sum(self.spent.values())

    def total(self) -> dict[str, float]:
        """Seconds per category over every invocation of the run (earlier ones up to their last checkpoint)."""
        self._charge()
        return {name: self.spent[name] + (self.before or {}).get(name, 0.0) for name in CATEGORIES}


class TimeBudget:
    """Measures the step time and fixes the plan (see the module's docstring). `observe` takes the measured cost of
    each evaluation and checkpoint; `on_step(step)`, called after every step, returns the plan once it is fixed."""

    def __init__(self, budget_s: float, account: TimeAccount, steps_per_epoch: int, cadence: EvaluationCosts,
                 sync: Callable[[], None] = lambda: None) -> None:
        self.budget_s, self.account, self.steps_per_epoch = budget_s, account, steps_per_epoch
        self.cadence = cadence  # how often each evaluation is due; its costs come from `observe`
        self.sync = sync  # waits for the device's queued work, at the measurement's two ends
        self.costs: dict[str, float] = {}  # "knn", "health", "checkpoint" -> the last measured seconds
        self.setup_s: float | None = None
        self._warmup_step: int | None = None
        self._mark = 0.0  # training seconds at the end of the warm-up step
        self.plan: BudgetPlan | None = None

    def observe(self, kind: str, seconds: float) -> None:
        self.costs[kind] = seconds

    def missing_costs(self) -> list[str]:
        """The evaluations due in this run whose cost has not been measured yet ("knn", "health")."""
        due = [("knn", self.cadence.knn_every), ("health", self.cadence.health_every)]
        return [kind for kind, every in due if every and kind not in self.costs]

    def evaluation_costs(self) -> EvaluationCosts:
        return EvaluationCosts(
            knn_s=self.costs.get("knn", 0.0), health_s=self.costs.get("health", 0.0),
            checkpoint_s=self.costs.get("checkpoint", 0.0), knn_every=self.cadence.knn_every,
            health_every=self.cadence.health_every, checkpoint_every_steps=self.cadence.checkpoint_every_steps,
        )

    def left_before_training(self) -> float:
        """Seconds of the budget left for training once the final evaluations are set aside (called before the
        first step; <= 0: not one step fits)."""
        self.setup_s = self.account.seconds()
        return self.budget_s - self.setup_s - self.evaluation_costs().final_s()

    def on_step(self, step: int) -> BudgetPlan | None:
        if self.plan is not None:
            return None
        if self._warmup_step is None:  # the invocation's first step: not measured
            self._warmup_step = step
            self.sync()
            self._mark = self.account.seconds("training")
            return None
        measured = step - self._warmup_step
        took = self.account.seconds("training") - self._mark  # without a sync: the device may be a step behind
        if not distributed.broadcast_object(measured >= MEASURE_STEPS or took >= MEASURE_FRACTION * self.budget_s):
            return None
        self.sync()
        took = self.account.seconds("training") - self._mark
        elapsed = self.account.seconds()
        plan = make_plan(self.budget_s, elapsed, self.setup_s if self.setup_s is not None else 0.0, step,
                         (self._warmup_step + 1, step), max(took / measured, 1e-9), self.steps_per_epoch,
                         self.evaluation_costs())
        self.plan = distributed.broadcast_object(plan)
        return self.plan
