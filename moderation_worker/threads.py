"""A fixed pool of daemon threads whose shutdown waits a bounded time.

``concurrent.futures.ThreadPoolExecutor`` is the obvious pool, but its threads are joined at
interpreter exit and ``shutdown`` can only wait for ever or not at all: one fetch stuck where no
deadline reaches (a DNS lookup that hangs inside ``connect``) would hold a stopping worker past any
bound. This pool hands out the same ``concurrent.futures.Future`` objects (so ``wait`` and
``as_completed`` work unchanged), keeps its threads as daemons, and its shutdown waits at most
``wait_s``.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

_STOP = object()


class DaemonPool:
    def __init__(self, workers: int, *, name: str) -> None:
        if workers < 1:
            raise ValueError("a pool needs at least one worker")
        self._work: queue.SimpleQueue = queue.SimpleQueue()
        self._closed = False
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, name=f"{name}-{n}", daemon=True) for n in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        future: Future = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("the pool is shut down")
            self._work.put((future, fn, args))
        return future

    def shutdown(self, *, wait_s: float) -> bool:
        """Cancel what has not started, let running calls finish for up to ``wait_s``; whether all did."""
        with self._lock:
            if not self._closed:
                self._closed = True
                for _ in self._threads:
                    self._work.put(_STOP)
        deadline = time.monotonic() + wait_s
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in self._threads)

    def _run(self) -> None:
        while True:
            item = self._work.get()
            if item is _STOP:
                return
            future, fn, args = item
            if self._closed:  # queued before the shutdown, never started
                future.cancel()
                future.set_running_or_notify_cancel()  # what tells wait() and as_completed()
                continue
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn(*args)
            except BaseException as exc:  # handed to whoever waits on the future, as the stdlib pool does
                future.set_exception(exc)
            else:
                future.set_result(result)
