"""train.compile for one pretraining run: the decision (training/compilation.py), printed; when auto has nothing
measured for this model on this machine, the trial that measures; and the ledger updated with what was measured.

The trial, with one process:
1. the run's first step is not timed (warm-up); the next `EAGER_STEPS` are, eager;
2. if the rest of the run is long enough to repay a first compile (`worth_a_trial`), the step is compiled: the next
   step compiles (its time, less an eager step's, is the compile time) and the `COMPILED_STEPS` after it are timed;
3. the faster form is kept (compiled only when at least MIN_SPEEDUP faster); the ledger keeps the four numbers, so
   the next run of the same signature decides at once.
Every trial step is a real training step: compiled and eager steps compute the same update (up to float32
rounding), so nothing is thrown away but the compile time. Step times include data loading (same for both forms).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from mocokit.engine.step import StepRunner
from mocokit.training.compilation import (
    MIN_SPEEDUP,
    CompileDecision,
    CompileLedger,
    CompileRecord,
    decide,
    inductor_cache_dir,
    worth_a_trial,
)

EAGER_STEPS = 3  # eager steps timed after the unmeasured first one
COMPILED_STEPS = 3  # compiled steps timed after the compiling one

# (steps left, or None with a time budget; training seconds left, or None without one)
Remaining = Callable[[], tuple[int | None, float | None]]


class CompileControl:
    """Decides train.compile at the start of a run and, for auto without a measurement, runs the trial from the
    engine's per-step hook (`after_step`); `settled` is False while the trial still measures (the time budget waits
    for it: its own measurement needs steps of the final form)."""

    def __init__(self, run_step: StepRunner, setting: bool | str, device_type: str, key: str,
                 ledger: CompileLedger, say: Callable[[str], None], remaining: Remaining, processes: int = 1,
                 write_ledger: bool = True, sync: Callable[[], None] = lambda: None,
                 clock: Callable[[], float] = time.perf_counter,
                 agree: Callable[[CompileDecision], CompileDecision] = lambda decision: decision) -> None:
        """agree: makes every process take the same decision (several processes: rank 0's, broadcast; each node
        may hold another ledger)."""
        self.run_step, self.device_type, self.key, self.ledger = run_step, device_type, key, ledger
        self.say, self.remaining, self.write_ledger, self.sync, self.clock = say, remaining, write_ledger, sync, clock
        measured = ledger.get(key)
        self.record = measured or CompileRecord()
        steps, budget_s = remaining()
        self.decision = agree(decide(setting, device_type, measured, inductor_cache_dir(), expected_steps=steps,
                                     budget_s=budget_s, processes=processes))
        say(self.decision.reason)
        self.phase = "eager" if self.decision.mode == "trial" else "settled"
        self._times: list[float] = []
        self._mark: float | None = None
        if self.decision.mode == "compile":
            run_step.set_compiled(True)

    @property
    def settled(self) -> bool:
        return self.phase == "settled"

    def after_step(self) -> None:
        if self.settled:
            return
        self.sync()
        now = self.clock()
        took, self._mark = (None if self._mark is None else now - self._mark), now
        if took is None:  # the first step: warm-up, not timed
            return
        if self.phase == "eager":
            self._times.append(took)
            if len(self._times) == EAGER_STEPS:
                self.record.eager_step_s, self._times = statistics.median(self._times), []
                steps, budget_s = self.remaining()
                worth, why = worth_a_trial(self.record.eager_step_s, self.device_type, remaining_steps=steps,
                                           remaining_s=budget_s)
                self.say(f"train.compile=auto: eager step {self.record.eager_step_s:.3f} s; {why}")
                if worth:
                    self.run_step.set_compiled(True)
                    self.phase = "compiling"
                else:
                    self._settle()
        elif self.phase == "compiling":  # that step compiled (its time went to `_compiled`)
            self.phase = "compiled"
        else:
            self._times.append(took)
            if len(self._times) == COMPILED_STEPS:
                self.record.compiled_step_s = statistics.median(self._times)
                speedup = self.record.speedup
                keep = speedup >= MIN_SPEEDUP
                self.say(f"train.compile=auto: compiled step {self.record.compiled_step_s:.3f} s, {speedup:.2f}x "
                         f"eager: {'keeping the compiled step' if keep else 'not faster, back to eager'} (measured "
                         f"for the next runs of this model: {self.ledger.path})")
                if not keep:
                    self.run_step.set_compiled(False)
                self._settle()

    def _settle(self) -> None:
        self.phase = "settled"
        self._save()

    def compiled(self, seconds: float) -> None:
        """To be called with the compiling step's wall time (the StepRunner's on_compiled): the compile time is that
        less an eager step (when one was measured), recorded as a first or a warm compile."""
        compile_s = max(seconds - (self.record.eager_step_s or 0.0), 0.0)
        cache = str(inductor_cache_dir())
        if self.record.inductor_cache == cache and self.record.first_compile_s is not None:
            self.record.warm_compile_s = compile_s
        else:
            self.record.first_compile_s, self.record.warm_compile_s = compile_s, None
            self.record.inductor_cache = cache
        self._save()

    def _save(self) -> None:
        if self.write_ledger:
            self.ledger.put(self.key, self.record)
