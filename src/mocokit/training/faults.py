"""Fault injection for the crash tests: `MOCOKIT_FAULT=<point>:<n>` kills the process with SIGKILL the n-th time it
reaches the named point. Inert (one environment lookup) when the variable is not set.

Points (the checkpoint ones are reached on the main process only, the only one that writes files):
- `step`: after the optimiser update of a step, before the step is counted, logged or checkpointed;
- `checkpoint-write`: the temporary checkpoint file written but not yet flushed, synced or renamed into place;
- `checkpoint-rotate`: the previous checkpoint kept as `previous.pt`, the new one not yet renamed to `last.pt`;
- `knn`: inside the kNN monitor, after the feature bank was extracted and before the queries are.

The tests run `python -m mocokit pretrain ...` with it, then resume the killed run and compare its final weights
with an uninterrupted run's. SIGKILL cannot be caught: nothing (no `finally`, no signal handler) runs after it, as
with the OOM killer or a pre-empted machine.
"""

from __future__ import annotations

import os
import signal
import sys
from collections import Counter

ENV = "MOCOKIT_FAULT"
POINTS = ("step", "checkpoint-write", "checkpoint-rotate", "knn")

# How often each point was reached in this process. The only module-level state in mocokit, and it is only touched
# when MOCOKIT_FAULT is set.
_reached: Counter[str] = Counter()


def fault_point(name: str) -> None:
    """Kill this process (SIGKILL) if MOCOKIT_FAULT names this point and this is its n-th visit."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    point, _, count = spec.partition(":")
    if point not in POINTS or not count.isdigit() or int(count) < 1:
        raise ValueError(f"{ENV}={spec!r}: expected <point>:<n> with point one of {', '.join(POINTS)} and n >= 1")
    if point != name:
        return
    _reached[name] += 1
    if _reached[name] == int(count):
        print(f"{ENV}: killing process {os.getpid()} at {name} #{count}", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
