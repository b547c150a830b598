"""The daemon pool: futures like the stdlib's, and a shutdown whose wait is bounded."""

from __future__ import annotations

import threading
from concurrent.futures import wait

import pytest

from moderation_worker.threads import DaemonPool


def test_results_and_exceptions_come_back_through_futures():
    pool = DaemonPool(2, name="t")
    ok, bad = pool.submit(lambda x: x * 2, 21), pool.submit(lambda: 1 / 0)
    wait([ok, bad], timeout=10)
    assert ok.result() == 42
    with pytest.raises(ZeroDivisionError):
        bad.result()
    assert pool.shutdown(wait_s=5)


def test_a_stuck_call_cannot_hold_shutdown_past_its_bound_and_queued_work_is_cancelled():
    release, running = threading.Event(), threading.Event()
    pool = DaemonPool(1, name="t")
    stuck = pool.submit(lambda: running.set() or release.wait())
    queued = pool.submit(lambda: "never")
    assert running.wait(timeout=10)

    assert pool.shutdown(wait_s=0.2) is False  # returned although the stuck call still runs
    assert not stuck.done()
    release.set()
    wait([stuck, queued], timeout=10)
    assert queued.cancelled()
    assert all(t.daemon for t in pool._threads)  # and it could never have held the process's exit
    with pytest.raises(RuntimeError):
        pool.submit(print)
