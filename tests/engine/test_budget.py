"""train.time_budget end to end on a tiny run, on a simulated clock: each step, kNN evaluation, health measurement
and checkpoint advances the clock by a fixed cost, so the plan is exact and can be checked against the arithmetic,
and an interrupted run resumes to the same plan, lr sequence and weights."""

import json
import math

import pytest
import torch

from mocokit.engine import pretrain as engine_pretrain
from mocokit.engine.budget import TimeAccount
from mocokit.engine.health_monitor import HealthMonitor
from mocokit.engine.monitor import KnnMonitor
from mocokit.engine.pretrain import pretrain
from mocokit.engine.step import StepRunner
from mocokit.errors import ConfigError
from mocokit.reporting import read_metrics
from mocokit.training.budget import EvaluationCosts, plan_total_steps, safety_margin
from mocokit.training.checkpoint import load_checkpoint, save_checkpoint

from .test_pretrain import final_weights, tiny_config

STEP_S, KNN_S, PIXELS_S, HEALTH_S, CHECKPOINT_S = 0.5, 3.0, 1.0, 1.0, 0.25  # simulated costs
# train.compile=false: the budget's own measurement from the first step (with auto, it waits for the compile trial:
# test_the_budget_measures_once_the_compile_trial_has_settled)
BUDGET = ["train.time_budget=60s", "monitor.knn_every_epochs=2", "run.log_every_steps=1", "train.compile=false"]


class SimulatedClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    """A clock that only the work of the run advances (4 steps per epoch in the tiny runs)."""
    simulated = SimulatedClock()

    def costing(function, seconds):
        def timed(*args, **kwargs):
            result = function(*args, **kwargs)
            simulated.now += seconds
            return result
        return timed

    monkeypatch.setattr(StepRunner, "__call__", costing(StepRunner.__call__, STEP_S))
    monkeypatch.setattr(KnnMonitor, "evaluate", costing(KnnMonitor.evaluate, KNN_S))
    monkeypatch.setattr(KnnMonitor, "pixel_baseline", costing(KnnMonitor.pixel_baseline, PIXELS_S))
    monkeypatch.setattr(HealthMonitor, "measure", costing(HealthMonitor.measure, HEALTH_S))
    monkeypatch.setattr(engine_pretrain, "save_checkpoint", costing(engine_pretrain.save_checkpoint, CHECKPOINT_S))
    return simulated


def records(run, kind):
    return read_metrics(run / "metrics.jsonl").get(kind, [])


def test_the_plan_fills_the_budget_and_the_schedule_ends_at_its_last_step(tiny_images, tmp_path, clock):
    run, said = tmp_path / "run", []
    cfg = tiny_config(tiny_images, run, *BUDGET)
    result = pretrain(cfg, echo=said.append, clock=clock)
    (plan,) = records(run, "budget")

    # Before the first step: kNN baseline 3 s + pixels 1 s + a timed health measurement 1 s + the step-0 checkpoint
    # 0.25 s. Measured: steps 2..5 (4 steps, 2 s >= 3% of 60 s). Between steps 4 and 5 the epoch end (health 1 s,
    # checkpoint 0.25 s), which is not training time. At the plan: 5.25 + 5 x 0.5 + 1.25 = 9 s.
    assert (plan["measured_from"], plan["measured_to"], plan["step"]) == (2, 5, 5)
    assert plan["setup_s"] == 5.25 and plan["elapsed_s"] == 9.0 and plan["seconds_per_step"] == STEP_S
    assert (plan["knn_s"], plan["health_s"], plan["checkpoint_s"]) == (KNN_S, HEALTH_S, CHECKPOINT_S)
    costs = EvaluationCosts(KNN_S, HEALTH_S, CHECKPOINT_S, knn_every=2, health_every=1)
    total = plan_total_steps(60, 9.0, 5, STEP_S, 4, costs, safety_margin(60))
    # by hand, 60 - 9 - 5 (margin) = 46 s left: T = 40 is 35 steps (17.5 s), the epoch ends at 8, 12, ..., 36 (8 x
    # 1.25 s), kNN at 8, 16, 24, 32 (4 x 3 s) and the final end at 40 (4.25 s): 43.75 s. T = 41 adds a step and the
    # end at 40 with its kNN: 48.5 s
    assert plan["total_steps"] == total == 40
    assert result.completed and result.steps_done == total and result.epochs_done == math.ceil(total / 4)

    # the simulated run spent exactly what was planned, and left the margin free
    (final,) = records(run, "final")
    spent = sum(final["seconds_spent"].values())
    assert spent == pytest.approx(plan["elapsed_s"] + plan["training_s"] + plan["evaluation_s"]
                                  + plan["checkpoints_s"]) == 9 + 43.75
    assert spent <= 60 - safety_margin(60)
    assert final["seconds_spent"]["training"] == pytest.approx(total * STEP_S)
    epochs = records(run, "epoch")
    assert epochs[-1]["step"] == total and epochs[-1]["knn_top1"] is not None and "rank" in epochs[-1]
    assert sum(e["knn_top1"] is not None for e in epochs) == plan["knn_evaluations"] - 0  # final one included

    # lr: the peak (no decay yet) until the plan, then the cosine over exactly `total` steps, ~0 at the last step
    peak = cfg.optim.lr * cfg.train.batch_size / 256
    lrs = {r["step"]: r["lr"] for r in records(run, "step")}
    assert sorted(lrs) == list(range(1, total + 1))
    for step, lr in lrs.items():
        expected = peak if step <= 5 else peak * 0.5 * (1 + math.cos(math.pi * (step - 1) / total))
        assert lr == pytest.approx(expected, rel=1e-9), step
    assert lrs[total] < 0.01 * peak
    assert any(line.startswith("time budget 60s: 5.2") and f"{total} steps = {total / 4:.2f} epochs" in line
               for line in said), said
    assert any(line.startswith("time budget 60.0 s: spent 52.8 s") for line in said), said
    report = (run / "report.html").read_text()
    assert "<h2>Time</h2>" in report and "planned" in report and "52.8 s" in report


def test_an_interrupted_budgeted_run_resumes_to_the_same_plan_lrs_and_weights(tiny_images, tmp_path, clock):
    straight = pretrain(tiny_config(tiny_images, tmp_path / "straight", *BUDGET), echo=lambda _m: None,
                        clock=clock)
    run, said = tmp_path / "resumed", []
    first = pretrain(tiny_config(tiny_images, run, *BUDGET, "train.stop_at_step=14"), echo=lambda _m: None,
                     clock=clock)
    assert not first.completed and first.steps_done == 14
    assert load_checkpoint(run / "checkpoints" / "last.pt")["budget"]["total_steps"] == straight.steps_done
    clock.now += 1000  # much later: the budget of the first invocation is not applied again
    torch.manual_seed(999)
    second = pretrain(tiny_config(tiny_images, run, *BUDGET), echo=said.append, clock=clock)
    assert second.completed and second.steps_done == straight.steps_done == 40
    assert any("follows its first invocation's plan (40 steps" in line for line in said), said
    assert len(records(run, "budget")) == 1  # planned once
    lrs = [(r["step"], r["lr"], r["momentum"]) for r in records(tmp_path / "straight", "step")]
    assert [(r["step"], r["lr"], r["momentum"]) for r in records(run, "step")] == lrs
    reference, resumed = final_weights(tmp_path / "straight"), final_weights(run)
    for key in reference:
        assert torch.equal(reference[key], resumed[key]), key
    # the time spent adds both invocations up to their checkpoints; the first one stopped after step 14
    (final,) = records(run, "final")
    assert final["seconds_spent"]["training"] == pytest.approx(40 * STEP_S)
    # and so do its minutes (what the experiment tables report); the second invocation's own wall time beside them
    assert final["minutes"] == pytest.approx(sum(final["seconds_spent"].values()) / 60)
    assert final["minutes"] >= 40 * STEP_S / 60 and final["minutes_this_invocation"] == pytest.approx(second.minutes)


def test_a_checkpoint_written_before_the_plan_or_by_an_older_mocokit_resumes(tiny_images, tmp_path, clock):
    run = tmp_path / "run"
    pretrain(tiny_config(tiny_images, run, *BUDGET, "train.stop_at_step=3"), echo=lambda _m: None, clock=clock)
    path = run / "checkpoints" / "last.pt"
    payload = load_checkpoint(path)
    assert payload["budget"] is None and payload["step"] == 3  # stopped while measuring
    # an older mocokit wrote neither the plan nor the time spent
    save_checkpoint(path, {k: v for k, v in payload.items() if k not in ("budget", "seconds_spent")})
    said = []
    result = pretrain(tiny_config(tiny_images, run, *BUDGET), echo=said.append, clock=clock)
    (plan,) = records(run, "budget")
    assert plan["measured_from"] == 5 and result.completed and result.steps_done == plan["total_steps"] > 3
    # without a budget, such a checkpoint resumes to train.epochs as before
    plain = tmp_path / "plain"
    pretrain(tiny_config(tiny_images, plain, "train.stop_at_step=3"), echo=lambda _m: None)
    payload = load_checkpoint(plain / "checkpoints" / "last.pt")
    save_checkpoint(plain / "checkpoints" / "last.pt",
                    {k: v for k, v in payload.items() if k not in ("budget", "seconds_spent")})
    assert pretrain(tiny_config(tiny_images, plain), echo=lambda _m: None).steps_done == 8


def test_a_budget_spent_before_the_first_step_is_refused_keeping_the_baselines(tiny_images, tmp_path, clock):
    run = tmp_path / "run"
    with pytest.raises(ConfigError, match=r"time budget 8s is spent before the first step.*Raise "
                                          r"train.time_budget.*monitor.knn_bank_size"):
        pretrain(tiny_config(tiny_images, run, *BUDGET[1:], "train.time_budget=8s"), echo=lambda _m: None,
                 clock=clock)
    saved = load_checkpoint(run / "checkpoints" / "last.pt")
    assert saved["step"] == 0 and saved["baseline"] is not None and saved["budget"] is None
    assert (run / "report.html").is_file() and records(run, "baseline")


def test_no_step_after_the_measurement_ends_the_run_there(tiny_images, tmp_path, clock):
    said = []
    result = pretrain(tiny_config(tiny_images, tmp_path / "run", *BUDGET[1:], "train.time_budget=11s"),
                      echo=said.append, clock=clock)
    # 5.25 s before the first step leave 11 - 5.25 - 4.25 (the final end) > 0: not refused. The measurement ends
    # after step 2 (0.5 s >= 3% of 11 s); then 6.25 s + a step 0.5 s + the final end 4.25 s + the 1.1 s margin > 11 s
    assert result.completed and result.steps_done == 2 and result.epochs_done == 1
    assert any("no step fits after the first 2; the run ends now" in line for line in said), said
    assert records(tmp_path / "run", "epoch")[-1]["knn_top1"] is not None  # the final evaluation still ran


def test_the_account_gives_nested_time_to_the_innermost_category():
    clock = SimulatedClock()
    account = TimeAccount(0.0, clock, before={"training": 10.0})
    clock.now = 1.0  # setup
    with account.spending("training") as outer:
        clock.now = 3.0
        with account.spending("checkpoints") as inner:
            clock.now = 3.5
        clock.now = 6.0
    clock.now = 6.25
    assert (outer.seconds, inner.seconds) == (5.0, 0.5)
    assert account.seconds() == 6.25
    assert account.spent == {"setup": 1.25, "baselines": 0.0, "training": 4.5, "evaluations": 0.0, "checkpoints": 0.5}
    assert account.total()["training"] == 14.5


def test_without_a_budget_the_run_and_its_records_keep_their_length(tiny_images, tmp_path):
    run = tmp_path / "run"
    result = pretrain(tiny_config(tiny_images, run), echo=lambda _m: None)
    assert result.steps_done == 8 and not records(run, "budget")
    saved = load_checkpoint(run / "checkpoints" / "last.pt")
    assert saved["budget"] is None and set(saved["seconds_spent"]) >= {"training", "evaluations"}
    (final,) = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()
                if json.loads(line)["kind"] == "final"]
    assert "budget" not in final and final["seconds_spent"]["training"] > 0
