"""Graceful stops: the first Ctrl-C (SIGINT) or SIGTERM (a cluster pre-empting the job) lets the current step finish
and the run write a checkpoint; a second one interrupts at once."""

from __future__ import annotations

import os
import signal
import sys
import threading
from types import FrameType

import torch

from mocokit import distributed


class GracefulStop:
    """Context manager; `requested` turns True at the first signal, which is acknowledged at once on stderr (by the
    main process only: under torchrun every process gets the Ctrl-C). Handlers are installed only in the main
    thread (Python delivers signals there) and the previous handlers are restored on exit."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)
    ACKNOWLEDGEMENT = ("mocokit: {signal} received: finishing the current step, then saving a checkpoint "
                       "(press Ctrl-C again to stop at once, losing the steps since the last checkpoint)\n")

    def __init__(self, announce: bool = True) -> None:
        self.requested = False
        self.signal_name = ""
        self.announce = announce
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.signal_name = signal.Signals(signum).name
        if self.announce and distributed.is_main_process():
            _write_now(self.ACKNOWLEDGEMENT.format(signal=self.signal_name))

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


def _write_now(text: str) -> None:
    """`text` on stderr from a signal handler: os.write on its file descriptor (unlike print, no buffer that the
    interrupted code may be in the middle of writing), or the stream's own write when it has none (a test's)."""
    try:
        os.write(sys.stderr.fileno(), text.encode())
    except (AttributeError, OSError, ValueError):
        sys.stderr.write(text)
        sys.stderr.flush()


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
