"""train.compile=auto's arithmetic (training/compilation.py): the decision from a ledger record, the trial's gate,
and the ledger file."""

import json
from pathlib import Path

import pytest

from mocokit.training.compilation import (
    FIRST_COMPILE_GUESS_S,
    PAYBACK,
    CompileLedger,
    CompileRecord,
    decide,
    signature,
    worth_a_trial,
)

CACHE = Path("/cache/inductor")
MEASURED = CompileRecord(eager_step_s=1.0, compiled_step_s=0.5, first_compile_s=100.0, warm_compile_s=10.0,
                         inductor_cache=str(CACHE))


def test_true_and_false_are_followed_whatever_was_measured():
    slower = CompileRecord(eager_step_s=1.0, compiled_step_s=2.0, first_compile_s=1.0)
    assert decide(True, "cpu", slower, CACHE, expected_steps=1).mode == "compile"
    assert decide(False, "cpu", MEASURED, CACHE, expected_steps=10**6).mode == "eager"


def test_auto_compiles_exactly_when_the_saving_repays_the_compile_payback_times():
    # warm cache: cost 10 s; each step saves 0.5 s, so PAYBACK x 10 s needs 40 steps
    needed = int(PAYBACK * 10.0 / 0.5)
    assert decide("auto", "cpu", MEASURED, CACHE, expected_steps=needed).mode == "compile"
    short = decide("auto", "cpu", MEASURED, CACHE, expected_steps=needed - 1)
    assert short.mode == "eager" and "over 39 steps (less than 2x the compile time)" in short.reason
    # another kernel cache is cold: the first compile's 100 s counts, so 400 steps are needed
    cold = Path("/elsewhere")
    assert decide("auto", "cpu", MEASURED, cold, expected_steps=399).mode == "eager"
    assert decide("auto", "cpu", MEASURED, cold, expected_steps=400).mode == "compile"


def test_auto_with_a_budget_counts_the_share_of_training_time_saved():
    # twice as fast: half of the budget saved; PAYBACK x 10 s warm needs a 40 s budget
    assert decide("auto", "cpu", MEASURED, CACHE, budget_s=40.0).mode == "compile"
    assert decide("auto", "cpu", MEASURED, CACHE, budget_s=39.0).mode == "eager"


def test_auto_never_compiles_a_step_that_measured_no_faster():
    record = CompileRecord(eager_step_s=1.0, compiled_step_s=0.99, first_compile_s=1.0, warm_compile_s=0.1,
                           inductor_cache=str(CACHE))
    decision = decide("auto", "cpu", record, CACHE, expected_steps=10**9)
    assert decision.mode == "eager" and "1.01x" in decision.reason and "not faster" in decision.reason


def test_auto_without_a_measurement_measures_on_one_process_and_stays_eager_on_several():
    partial = CompileRecord(eager_step_s=1.0)  # a trial that found the run too short to compile
    for record in (None, partial):
        assert decide("auto", "cpu", record, CACHE, expected_steps=10).mode == "trial"
        several = decide("auto", "cuda", record, CACHE, expected_steps=10, processes=2)
        assert several.mode == "eager" and "several processes" in several.reason
    assert decide("auto", "mps", None, CACHE, expected_steps=10).mode == "eager"


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_a_trial_compiles_only_when_even_a_2x_step_could_repay_a_first_compile(device):
    guess = FIRST_COMPILE_GUESS_S[device]
    steps = int(2 * PAYBACK * guess)  # eager steps of 1 s: half of them saved by a 2x step
    assert worth_a_trial(1.0, device, remaining_steps=steps)[0]
    assert not worth_a_trial(1.0, device, remaining_steps=steps - 1)[0]
    assert worth_a_trial(1.0, device, remaining_s=2 * PAYBACK * guess)[0]
    yes, why = worth_a_trial(0.01, device, remaining_steps=100)
    assert not yes and "too short" in why


def test_the_ledger_keeps_records_per_signature_and_survives_damage(tmp_path):
    ledger = CompileLedger(tmp_path / "compile" / "ledger.json")
    assert ledger.get("a") is None  # no file yet
    key = signature({"version": "v2", "width": 0.25}, batch=128, device="cpu")
    assert key == signature({"width": 0.25, "version": "v2"}, device="cpu", batch=128)  # order does not matter
    assert key != signature({"version": "v2", "width": 0.5}, batch=128, device="cpu")
    ledger.put(key, CompileRecord(eager_step_s=1.0, compiled_step_s=0.8))
    ledger.put("other", CompileRecord(first_compile_s=5.0))
    got = ledger.get(key)
    assert got.speedup == pytest.approx(1.25) and got.measured is not None
    assert ledger.get("other").first_compile_s == 5.0
    data = json.loads(ledger.path.read_text())
    data[key]["from_a_newer_version"] = 1  # unknown fields are ignored
    ledger.path.write_text(json.dumps(data))
    assert ledger.get(key).eager_step_s == 1.0
    ledger.path.write_text("{not json")
    assert ledger.get(key) is None  # a damaged ledger is an empty one: only measurements are lost
    ledger.put(key, CompileRecord(eager_step_s=2.0))
    assert ledger.get(key).eager_step_s == 2.0
