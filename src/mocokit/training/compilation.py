"""torch.compile for a training run: where its kernels are kept, what compiling measured on this machine, and the
decision of train.compile=auto from those measurements.

Compiling pays when the steps it makes faster add up to more than the compilation costs. Both sides depend on the
model, the machine and the run's length, so `auto` decides from measurements, never from a rule of thumb:
- a **ledger** (`<cache>/compile/ledger.json`, one record per model signature: config of the model, batch, image
  size, precision, memory format, device, threads, torch version) holds the eager and compiled step times and the
  first and warm compile times measured by earlier runs of the same signature on this machine;
- with a record, `decide` compiles when the expected steps save at least `PAYBACK` times the compile time (the warm
  one when a compile of this signature has already filled the kernel cache), and never when the compiled step was
  not faster;
- without one, the run **measures** (engine/compile_trial.py): a few eager steps, then, if the rest of the run is
  long enough to repay a first compile, a compile and a few compiled steps; it keeps the faster form and records what
  it measured, so the next run decides at once.
Inductor's caches (compiled kernels and autograd graphs) are kept in `<cache>/inductor` instead of the system's
temporary folder, so that a second run or a resumed one compiles in seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from mocokit.cache import cache_dir
from mocokit.files import write_text_atomically

INDUCTOR_CACHE_VARIABLE = "TORCHINDUCTOR_CACHE_DIR"
PAYBACK = 2.0  # compile when the expected saving is at least this many times the compile time
MIN_SPEEDUP = 1.03  # a compiled step must be at least this much faster to be kept (below: measurement noise)
# What a first compile is assumed to cost before this machine has measured one (the trial's gate): above the demo
# MoCo step's measured on 2 CPU cores (README, Performance); on GPUs a guess, not measured yet.
FIRST_COMPILE_GUESS_S = {"cpu": 120.0, "cuda": 90.0}


def inductor_cache_dir() -> Path:
    """Where Inductor keeps compiled kernels: $TORCHINDUCTOR_CACHE_DIR when the user set it, else `<mocokit
    cache>/inductor`. (Importing parts of torch._dynamo sets the variable to torch's default, a folder of the system's
    temporary one: that value does not count as the user's choice.)"""
    chosen = os.environ.get(INDUCTOR_CACHE_VARIABLE)
    if chosen and not _torch_default(chosen):
        return Path(chosen)
    return cache_dir() / "inductor"


def _torch_default(path: str) -> bool:
    try:
        from torch._inductor.runtime.cache_dir_utils import default_cache_dir
    except ImportError:  # another torch layout: take the variable as the user's
        return False
    return os.path.abspath(path) == os.path.abspath(default_cache_dir())


def ledger_path() -> Path:
    return cache_dir() / "compile" / "ledger.json"


@dataclass
class CompileRecord:
    """What compiling one model signature measured on this machine (seconds; None: not measured yet)."""

    eager_step_s: float | None = None
    compiled_step_s: float | None = None
    first_compile_s: float | None = None  # a compile with a cold kernel cache
    warm_compile_s: float | None = None  # a later compile of the same signature (kernels from the cache)
    inductor_cache: str | None = None  # the kernel cache the compiles used (a different one is cold again)
    measured: str | None = None  # when last updated

    @property
    def speedup(self) -> float | None:
        if self.eager_step_s is None or self.compiled_step_s is None:
            return None
        return self.eager_step_s / self.compiled_step_s

    def compile_cost_s(self, cache: Path) -> float | None:
        """The compile time to expect with kernel cache `cache`: the warm one when this signature was compiled into
        it before, else the first."""
        warm = self.inductor_cache == str(cache) and self.first_compile_s is not None
        if warm and self.warm_compile_s is not None:
            return self.warm_compile_s
        return self.first_compile_s

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CompileRecord:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def device_name(device) -> str:
    """What the measurements of a device depend on: the GPU's name, or the CPU's model and core count."""
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor() or platform.machine()
    return f"{device.type}: {cpu}, {os.cpu_count()} cores"


def signature(model: dict[str, Any], **setting: Any) -> str:
    """A short stable key for a model config (as a dict) and the settings that change its step's speed (batch per
    process, image size, precision, memory format, device name, threads, torch version, compile scope)."""
    text = json.dumps({"model": model, **setting}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class CompileLedger:
    """The ledger file: {signature: CompileRecord}. Unreadable or foreign content counts as empty (it is only a
    cache of measurements); writes are atomic."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or ledger_path()

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def get(self, key: str) -> CompileRecord | None:
        entry = self._read().get(key)
        return CompileRecord.from_dict(entry) if isinstance(entry, dict) else None

    def put(self, key: str, record: CompileRecord) -> None:
        data = self._read()
        record.measured = time.strftime("%Y-%m-%d %H:%M")
        data[key] = asdict(record)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomically(self.path, json.dumps(data, indent=1, sort_keys=True) + "\n")
        except OSError:
            pass  # a read-only cache loses only the next run's head start


@dataclass(frozen=True)
class CompileDecision:
    mode: str  # "eager", "compile", or "trial" (measure, then keep the faster form)
    reason: str  # one line, printed by the run


def decide(setting: bool | str, device_type: str, record: CompileRecord | None, cache: Path, *,
           expected_steps: int | None = None, budget_s: float | None = None, processes: int = 1) -> CompileDecision:
    """train.compile resolved for a run of `expected_steps` more steps, or of `budget_s` more seconds of training
    (a time budget's run). true/false are followed; auto decides from `record` (this signature's ledger entry) when
    it has both step times and a compile time, else measures (one process only: with several, auto stays eager until
    a measurement exists, so that ranks cannot decide apart)."""
    if setting is True:
        return CompileDecision("compile", "train.compile=true")
    if setting is False:
        return CompileDecision("eager", "train.compile=false")
    if device_type not in FIRST_COMPILE_GUESS_S:
        return CompileDecision("eager", f"train.compile=auto: not measured on {device_type} devices, eager")
    speedup = record.speedup if record is not None else None
    cost = record.compile_cost_s(cache) if record is not None else None
    if speedup is None or cost is None:
        if processes > 1:
            return CompileDecision("eager", "train.compile=auto: eager: no compiled step of this model was measured "
                                            "on this machine yet, and a run of several processes does not measure "
                                            "one (a one-process run with auto does, or set train.compile=true)")
        return CompileDecision("trial", "train.compile=auto: no compiled step of this model measured on this "
                                        "machine yet: timing eager steps, then compiled ones if the run is long "
                                        "enough to repay a compile")
    numbers = (f"compiled step {speedup:.2f}x eager ({record.compiled_step_s:.3f} vs {record.eager_step_s:.3f} s), "
               f"compile {cost:.0f} s (measured here)")
    if speedup < MIN_SPEEDUP:
        return CompileDecision("eager", f"train.compile=auto: eager: {numbers}: not faster")
    if expected_steps is not None:
        saving, over = expected_steps * (record.eager_step_s - record.compiled_step_s), f"{expected_steps:,} steps"
    else:  # the same training time, spent on faster steps
        saving, over = (budget_s or 0.0) * (1 - 1 / speedup), f"a budget of {budget_s or 0:.0f} s"
    if saving >= PAYBACK * cost:
        return CompileDecision("compile", f"train.compile=auto: compiling: {numbers}; saves about {saving:.0f} s "
                                          f"over {over}")
    return CompileDecision("eager", f"train.compile=auto: eager: {numbers} would save only {saving:.0f} s over "
                                    f"{over} (less than {PAYBACK:g}x the compile time)")


def worth_a_trial(eager_step_s: float, device_type: str, *, remaining_steps: int | None = None,
                  remaining_s: float | None = None) -> tuple[bool, str]:
    """After timing eager steps and with nothing measured of a compile yet: is the rest of the run long enough
    to repay a first compile even if compiling made every step twice as fast? (The rest: `remaining_steps` of
    `eager_step_s`, or `remaining_s` of a time budget.) Returns (yes, the reason)."""
    guess = FIRST_COMPILE_GUESS_S[device_type]
    rest = remaining_s if remaining_steps is None else remaining_steps * eager_step_s
    best_saving = (rest or 0.0) / 2
    if best_saving >= PAYBACK * guess:
        return True, (f"the rest of the run takes about {rest:.0f} s eager: compiling to measure (a first compile "
                      f"takes about {guess:.0f} s here)")
    return False, (f"the rest of the run takes about {rest:.0f} s eager, too short to repay a first compile (about "
                   f"{guess:.0f} s): eager")
