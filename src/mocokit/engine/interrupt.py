"""Graceful stops: the first Ctrl-C (SIGINT) or SIGTERM (a cluster pre-empting the job) lets the current step finish
and the run write a checkpoint; a second one interrupts at once."""

from __future__ import annotations

import signal
import threading
from types import FrameType


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
