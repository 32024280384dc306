"""train.compile=auto's trial (engine/compile_trial.py) driven step by step with a simulated clock and a stand-in
for the StepRunner: what it times, when it compiles, what it keeps, and what the ledger learns."""

import pytest

from mocokit.engine.compile_trial import COMPILED_STEPS, EAGER_STEPS, CompileControl
from mocokit.training.compilation import FIRST_COMPILE_GUESS_S, CompileLedger, inductor_cache_dir


class FakeRunStep:
    """Records set_compiled calls; `step()` advances the clock by the current form's step time (plus the compile
    time on the first compiled step) and reports the compiling step like the StepRunner's on_compiled."""

    def __init__(self, clock, eager_s, compiled_s, compile_s):
        self.clock, self.eager_s, self.compiled_s, self.compile_s = clock, eager_s, compiled_s, compile_s
        self.compiled, self.calls, self.control = False, [], None
        self._pending = False

    def set_compiled(self, on):
        self.calls.append(on)
        self.compiled = self._pending = on

    def step(self):
        took = self.compiled_s if self.compiled else self.eager_s
        if self._pending:
            took += self.compile_s
            self._pending = False
            self.clock.now += took
            self.control.compiled(took)
        else:
            self.clock.now += took
        self.control.after_step()


class Clock:
    now = 0.0

    def __call__(self):
        return self.now


def control(tmp_path, eager_s, compiled_s, compile_s, steps_left, setting="auto", ledger=None):
    clock, said = Clock(), []
    run_step = FakeRunStep(clock, eager_s, compiled_s, compile_s)
    ledger = ledger or CompileLedger(tmp_path / "ledger.json")
    run_step.control = CompileControl(run_step, setting, "cpu", "sig", ledger, said.append,
                                      lambda: (steps_left, None), clock=clock)
    return run_step, run_step.control, ledger, said


def run(run_step, steps):
    for _ in range(steps):
        run_step.step()


def test_a_long_run_compiles_keeps_the_faster_step_and_records_what_it_measured(tmp_path):
    run_step, ctl, ledger, said = control(tmp_path, eager_s=1.0, compiled_s=0.5, compile_s=100.0, steps_left=10_000)
    assert ctl.decision.mode == "trial" and not ctl.settled
    run(run_step, 1 + EAGER_STEPS)  # warm-up, then the timed eager steps
    assert run_step.calls == [True] and not ctl.settled
    run(run_step, 1 + COMPILED_STEPS)  # the compiling step, then the timed compiled ones
    assert ctl.settled and run_step.calls == [True] and run_step.compiled
    record = ledger.get("sig")
    assert (record.eager_step_s, record.compiled_step_s) == (1.0, 0.5)
    assert record.first_compile_s == pytest.approx(100.5 - 1.0) and record.warm_compile_s is None
    assert record.inductor_cache == str(inductor_cache_dir())
    assert any("2.00x eager: keeping the compiled step" in line for line in said)
    # the next run of the same signature decides at once, counting the warm compile after this first one
    run_step2, ctl2, _, said2 = control(tmp_path, 1.0, 0.5, 10.0, steps_left=10_000, ledger=ledger)
    assert ctl2.decision.mode == "compile" and ctl2.settled and run_step2.calls == [True]
    run(run_step2, 2)
    assert ledger.get("sig").warm_compile_s == pytest.approx(10.5 - 1.0)  # the compiling step less an eager one


def test_a_compiled_step_that_is_not_faster_goes_back_to_eager_and_is_remembered(tmp_path):
    run_step, ctl, ledger, said = control(tmp_path, eager_s=1.0, compiled_s=1.2, compile_s=50.0, steps_left=10_000)
    run(run_step, 2 + EAGER_STEPS + COMPILED_STEPS)
    assert ctl.settled and run_step.calls == [True, False] and not run_step.compiled
    assert any("0.83x eager: not faster, back to eager" in line for line in said)
    _, ctl2, _, said2 = control(tmp_path, 1.0, 1.2, 50.0, steps_left=10**9, ledger=ledger)
    assert ctl2.decision.mode == "eager" and "not faster" in said2[0]


def test_a_short_run_times_eager_steps_only_and_never_compiles(tmp_path):
    steps = int(FIRST_COMPILE_GUESS_S["cpu"])  # at 1 s per step, even a 2x step saves too little
    run_step, ctl, ledger, said = control(tmp_path, eager_s=1.0, compiled_s=0.5, compile_s=100.0, steps_left=steps)
    run(run_step, 10)
    assert ctl.settled and run_step.calls == []
    assert ledger.get("sig").eager_step_s == 1.0 and ledger.get("sig").compiled_step_s is None
    assert "too short to repay a first compile" in said[-1]


def test_true_and_false_are_not_measured(tmp_path):
    run_step, ctl, _, _ = control(tmp_path, 1.0, 0.5, 100.0, steps_left=1, setting=True)
    assert ctl.settled and run_step.calls == [True]
    run_step, ctl, _, _ = control(tmp_path, 1.0, 0.5, 100.0, steps_left=10**9, setting=False)
    assert ctl.settled and run_step.calls == []
