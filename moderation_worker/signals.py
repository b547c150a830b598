"""SIGTERM and SIGINT for the worker loop: the first asks for a stop, a second abandons the batch.

A signal handler runs on the main thread between two bytecodes, wherever that thread is, including
inside a log write that holds structlog's (non-reentrant) print lock. A handler that logs, or takes
any lock the loop may hold, can therefore deadlock the process. So the first signal only sets an
event (its lock is never held by the main thread: nothing there waits on it) and records which
signal it was in a plain attribute; the loop logs it on its next turn (:meth:`StopSignal.take_notice`).
A second signal raises ``KeyboardInterrupt`` at whatever point the main thread is, which abandons the
batch in hand: nothing is committed for it, and the next owner of its partitions processes it.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

HANDLED = (signal.SIGTERM, signal.SIGINT)


class StopSignal:
    """The stop request every part of the worker watches (the loop, the fetch deadlines)."""

    def __init__(self, event: threading.Event | None = None) -> None:
        self.event = event or threading.Event()
        self._signal: int | None = None  # set by the handler; read and cleared by the loop
        self._noticed = False

    def is_set(self) -> bool:
        return self.event.is_set()

    def request(self) -> None:
        """Ask for a stop (from any thread, or a signal handler: it only sets an event)."""
        self.event.set()

    def take_notice(self) -> str | None:
        """The name of the signal that asked for the stop, once, for the loop to log; else None."""
        if self._noticed or self._signal is None:
            return None
        self._noticed = True
        return signal.Signals(self._signal).name

    @contextmanager
    def handling_signals(self) -> Iterator[None]:
        """Install the handlers for the duration (main thread only; elsewhere: use request())."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.getsignal(sig) for sig in HANDLED}
        for sig in HANDLED:
            signal.signal(sig, self._on_signal)
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, signum: int, _frame: object) -> None:
        # No logging and no locks here (see the module docstring).
        if self.event.is_set():
            raise KeyboardInterrupt  # a second signal: abandon the batch in hand
        self._signal = signum
        self.event.set()
