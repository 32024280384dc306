"""train.time_budget: the duration parser, and the arithmetic of the plan against hand computations."""

import math

import pytest

from mocokit.errors import ConfigError
from mocokit.training.budget import (
    BudgetPlan,
    EvaluationCosts,
    evaluation_seconds,
    make_plan,
    multiples_between,
    plan_total_steps,
    safety_margin,
)
from mocokit.training.config import OptimConfig, parse_duration
from mocokit.training.run_config import load_config
from mocokit.training.schedules import learning_rate_at


@pytest.mark.parametrize(("text", "seconds"), [
    ("20m", 1200), ("1h30m", 5400), ("90s", 90), ("3600", 3600), (3600, 3600), ("1.5h", 5400), (2.5, 2.5),
    ("2h 15m 30s", 8130), ("1h30s", 3630), (" 45M ", 2700),
])
def test_durations_parse_to_seconds(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["20 minutes", "1m1h", "1h30", "", "h", "5d", "0", "-5", "0m", "inf", "nan",
                                  "1e400", "twenty"])
def test_other_durations_are_refused_naming_the_accepted_forms(text):
    with pytest.raises(ValueError, match=r"duration"):
        parse_duration(text)


def test_the_config_key_takes_a_duration_and_refuses_a_sentence():
    assert load_config("v2-cifar10").train.time_budget_seconds is None  # off by default
    assert load_config("v2-cifar10", ["train.time_budget=1h30m"]).train.time_budget_seconds == 5400
    assert load_config("v2-cifar10", ["train.time_budget=90"]).train.time_budget_seconds == 90  # YAML int
    with pytest.raises(ConfigError, match=r"train.time_budget: '20 minutes' is not a duration.*20m, 1h30m"):
        load_config("v2-cifar10", ["train.time_budget=20 minutes"])


def test_epoch_ends_still_to_come_include_the_one_at_the_step_just_run():
    # the plan is made right after a step, before that step's epoch end: an end at first_step is still to come,
    # the one at last_step is the final end (counted apart)
    assert multiples_between(5, 60, 10) == 5  # 10, 20, 30, 40, 50
    assert multiples_between(10, 60, 10) == 5  # 10 (not yet run), 20, ..., 50
    assert multiples_between(11, 60, 10) == 4
    assert multiples_between(0, 25, 10) == 2  # no end at step 0
    assert multiples_between(7, 7, 10) == 0 and multiples_between(9, 3, 10) == 0


def test_the_plan_fills_the_budget_by_hand():
    # budget 100 s, 10 s spent, 5 steps done at 1 s/step, 10 steps/epoch, each epoch end costs a 4 s kNN and a 1 s
    # checkpoint, the final end the same, 5 s margin: 85 s left.
    # T = 60: 55 steps + 5 epoch ends (10..50) x 5 s + the final 5 s = 85 s, fits; T = 61 adds a step and the end
    # at 60: 91 s, does not.
    costs = EvaluationCosts(knn_s=4.0, checkpoint_s=1.0, knn_every=1)
    assert evaluation_seconds(5, 60, 10, costs) == 5 * 5 + 5
    assert plan_total_steps(100, 10, 5, 1.0, 10, costs, margin_s=5) == 60
    # kNN every 2 epochs: T = 67 passes the ends 10..60 (6 checkpoints, 6 s) with kNN at 20, 40, 60 (12 s), and the
    # final end (5 s): 62 + 6 + 12 + 5 = 85 s, fits; T = 68: 86 s, does not
    every_two = EvaluationCosts(knn_s=4.0, checkpoint_s=1.0, knn_every=2)
    assert evaluation_seconds(5, 67, 10, every_two) == 6 + 12 + 5
    assert plan_total_steps(100, 10, 5, 1.0, 10, every_two, margin_s=5) == 67
    # health every epoch, periodic checkpoints every 25 steps
    full = EvaluationCosts(knn_s=4.0, health_s=2.0, checkpoint_s=1.0, knn_every=1, health_every=1,
                           checkpoint_every_steps=25)
    assert evaluation_seconds(5, 60, 10, full) == 5 * (4 + 2 + 1) + 2 * 1 + (4 + 2 + 1)  # 25, 50 periodic


def test_a_budget_spent_before_the_plan_plans_no_further_step():
    costs = EvaluationCosts(knn_s=4.0, checkpoint_s=1.0, knn_every=1)
    assert plan_total_steps(100, 90, 21, 1.0, 10, costs, margin_s=5) == 21  # 5 s left: the final end alone
    assert plan_total_steps(100, 89, 21, 1.0, 10, costs, margin_s=5) == 22  # one step more (and its final end)
    assert plan_total_steps(100, 120, 21, 1.0, 10, costs, margin_s=5) == 21  # overspent already


def test_make_plan_records_what_it_rests_on():
    costs = EvaluationCosts(knn_s=4.0, checkpoint_s=1.0, knn_every=1)
    plan = make_plan(250.0, 10.0, 4.0, 5, (2, 5), 1.0, 10, costs)
    assert safety_margin(250.0) == plan.margin_s == 5.0  # 2% is under the 5 s floor
    assert plan.total_steps == plan_total_steps(250, 10, 5, 1.0, 10, costs, 5.0)
    assert plan.training_s == plan.total_steps - 5
    assert plan.knn_evaluations == multiples_between(5, plan.total_steps, 10) + 1  # the final one included
    assert plan.evaluation_s + plan.checkpoints_s == evaluation_seconds(5, plan.total_steps, 10, costs)
    assert plan.checkpoints_s == plan.knn_evaluations * 1.0  # a checkpoint at each end, as many as kNN runs here
    assert plan.planned_s <= 250 - plan.margin_s
    assert plan.epochs == plan.total_steps / 10 and BudgetPlan.from_record(plan.to_record()) == plan
    assert safety_margin(10_000) == 200 and safety_margin(20) == 2  # 2%; never more than a tenth


@pytest.mark.parametrize(("warmup", "total", "steps_per_epoch"), [(0.0, 47, 4), (1.5, 47, 4), (2.0, 1003, 50)])
def test_the_cosine_over_a_fractional_number_of_epochs_ends_at_the_planned_step(warmup, total, steps_per_epoch):
    cfg = OptimConfig(warmup_epochs=warmup)
    epochs = total / steps_per_epoch  # a budget's plan: the last epoch is partial
    lr = [learning_rate_at(s, steps_per_epoch, epochs, 2.0, cfg) for s in range(total + 1)]
    warm = round(warmup * steps_per_epoch)
    assert lr[total] == pytest.approx(0.0, abs=1e-12)  # the cosine's end: just after the last step (total - 1)
    last = 2.0 * 0.5 * (1 + math.cos(math.pi * (total - 1 - warm) / (total - warm)))
    assert lr[total - 1] == pytest.approx(last, rel=1e-9) and 0 < lr[total - 1] < 2.0 * 1e-2
    assert max(lr) == pytest.approx(2.0) and lr.index(max(lr)) == warm
    assert all(a >= b for a, b in zip(lr[warm:], lr[warm + 1:]))


def test_an_unplanned_length_holds_the_cosine_at_its_start():
    """While a budget's plan is measured the length is infinite: the warm-up as configured, no decay yet."""
    warm = OptimConfig(warmup_epochs=2.0)
    assert learning_rate_at(3, 4, math.inf, 2.0, warm) == learning_rate_at(3, 4, 10, 2.0, warm) == 0.75
    assert learning_rate_at(9, 4, math.inf, 2.0, OptimConfig()) == 2.0


def test_v3_momentum_stays_at_m0_until_the_plan_then_reaches_1_at_the_planned_end():
    from mocokit.models.config import ModelConfig
    from mocokit.training.schedules import momentum_at

    v3 = ModelConfig(version="v3", momentum=0.99, momentum_schedule="cosine")
    assert momentum_at(17, math.inf, v3) == pytest.approx(0.99)
    assert momentum_at(47, 47, v3) == pytest.approx(1.0) and momentum_at(46, 47, v3) < 1.0
