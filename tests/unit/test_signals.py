"""SIGTERM landing inside a log write: the stop never deadlocks, and a second signal still abandons.

Each case runs a worker (in-memory consumer and producer, the real loop) in a subprocess whose stderr
sends the signal to its own process from inside a write, that is while structlog's print lock is
held: exactly where a handler that logs would deadlock. The subprocess must exit by itself.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    from moderation_worker.logging_setup import configure_logging
    from moderation_worker.worker import StopConditions
    from tests.unit.test_worker_loop import _event, _world

    SIGNAL_ON_WRITES = {signal_on_writes}

    class SignallingStderr:
        # Sends SIGTERM to this process from inside the n-th write: the handler runs right here,
        # on the main thread, while the logger holds its write lock.
        def __init__(self):
            self.writes = 0
        def write(self, text):
            self.writes += 1
            if self.writes in SIGNAL_ON_WRITES:
                os.kill(os.getpid(), signal.SIGTERM)
            return sys.__stderr__.write(text)
        def flush(self):
            sys.__stderr__.flush()

    configure_logging("INFO", "json")
    sys.stderr = SignallingStderr()
    records = {{0: [_event(n) for n in range(400)]}}
    world = _world(records, stop=StopConditions(idle_timeout_s=1e9), batch_size=4)
    try:
        summary = world.worker.run()
    except KeyboardInterrupt:
        print("abandoned", world.worker.summary.events, file=sys.__stdout__, flush=True)
        sys.exit(130)
    print("stopped", summary.events, file=sys.__stdout__, flush=True)
    """
)


def _run(signal_on_writes: set[int]) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(
            [sys.executable, "-c", SCRIPT.format(signal_on_writes=sorted(signal_on_writes))],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the worker hung after a signal landed inside a log write: {exc.stderr!r}"[-2000:])


def test_a_sigterm_inside_a_log_write_stops_the_worker_without_deadlock():
    # Given a signal that arrives while the loop is writing the log lines of its first batch
    finished = _run({6})

    # I expect a normal stop: the batch in hand finished, published and committed, then the stop logged
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert finished.stdout.startswith("stopped")
    events = int(finished.stdout.split()[1])
    assert 0 < events < 400  # it stopped early, after finishing what it had
    assert '"event": "stop_signal_received"' in finished.stderr and '"signal": "SIGTERM"' in finished.stderr
    assert '"event": "worker_stopped"' in finished.stderr


def test_a_second_signal_still_abandons_the_batch_in_hand():
    finished = _run({6, 7})
    assert finished.returncode == 130, finished.stderr[-2000:]
    assert finished.stdout.startswith("abandoned")
