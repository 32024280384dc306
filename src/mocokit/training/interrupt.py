"""Graceful stops: the first Ctrl-C (SIGINT) or SIGTERM (a cluster pre-empting the job) lets the current step finish
and the run write a checkpoint; a second one interrupts at once."""

from __future__ import annotations

import signal
import threading
from types import FrameType

import torch

from mocokit import distributed


class GracefulStop:
    """Context manager; `requested` turns True at the first signal. Handlers are installed only in the main thread
    (Python delivers signals there) and the previous handlers are restored on exit."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested = False
        self.signal_name = ""
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.signal_name = signal.Signals(signum).name

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


class StopAgreement:
    """What every process of a run answers to "stop now?": a signal reaches the processes at different moments (or
    only one of them), but all must stop after the same step or the next collective hangs. The local flags are
    combined with an all-reduce every `every` calls (one call per step); between polls the last agreed answer holds.
    A poll reads a value back from the device, so it is not done every step. On one process it is the local flag."""

    def __init__(self, stop: GracefulStop, every: int = 10) -> None:
        self.stop, self.every = stop, max(1, every)
        self.calls = 0
        self.agreed = False

    @property
    def requested(self) -> bool:
        """The answer so far, without polling."""
        return self.stop.requested if not distributed.is_distributed() else self.agreed

    def __call__(self) -> bool:
        if not distributed.is_distributed():
            return self.stop.requested
        self.calls += 1
        if not self.agreed and self.calls % self.every == 0:
            flag = torch.tensor([float(self.stop.requested)], device=distributed.collective_device())
            self.agreed = bool(distributed.all_reduce_max_(flag).item())
        return self.agreed
