"""Liveness and readiness of one worker process.

``HealthState`` holds what the worker reports about itself (start-up phase, beats, broker, assignment,
model, S3, stopping) and turns it into liveness and readiness reports; every method is thread-safe.
``health_server.HealthServer`` serves them over HTTP with the metrics.

Typical wiring in the worker::

    metrics = WorkerMetrics()
    state = HealthState(stall_after_s=settings.max_poll_interval_ms / 1000)
    server = HealthServer(state, metrics, settings.health_host, settings.health_port).start()
    state.starting("loading_model")
    ...                              # load, connect: /livez 200, /readyz 503 naming the phase
    while running:
        state.beat()
        ...
    server.stop()

Liveness asks one question: is the process making progress? While it starts (``starting(phase)``),
it passes for up to ``startup_timeout_s`` (a model load may take many minutes; a start-up stuck for
longer fails it). Once the loop runs, it fails when no ``beat()`` came within ``stall_after_s``.

Readiness asks whether this worker is doing useful work: started, loop beating, broker connected,
model loaded, S3 not failing, not stopping and, by default, at least one partition assigned. A
consumer group never gives one partition to two members, so with more workers than partitions some
are idle but healthy: they report ``"idle": true`` and fail readiness while ``require_assignment`` is
on. That is the honest answer for a dashboard, but it stalls a rolling update that waits for new
pods to become ready when replicas exceed partitions; deployments that run spare replicas set
``require_assignment=False`` (idle workers then stay ready and still say ``"idle": true``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class HealthReport:
    """One probe's answer: ``ok`` decides 200 or 503; ``body`` is the JSON the endpoint returns."""

    ok: bool
    failing: tuple[str, ...]
    body: dict[str, object] = field(default_factory=dict)


class HealthState:
    """What the worker reports about itself, read by the probes. Every method is thread-safe.

    Starts not ready: broker not connected, no partitions, model not loaded. S3 counts as healthy
    until a call says otherwise (the worker learns about S3 only by fetching).
    """

    def __init__(
        self,
        *,
        stall_after_s: float = 300.0,
        require_assignment: bool = True,
        startup_timeout_s: float = 1800.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if stall_after_s <= 0 or startup_timeout_s <= 0:
            raise ValueError("stall_after_s and startup_timeout_s must be positive")
        self.stall_after_s = stall_after_s
        self.require_assignment = require_assignment
        self.startup_timeout_s = startup_timeout_s
        self._clock = clock
        self._lock = threading.Lock()
        self._phase: str | None = None  # what start-up is doing, until the loop's first beat
        self._started_at: float | None = None
        self._last_beat = clock()
        self._beats = 0
        self._broker_connected = False
        self._partitions = 0
        self._model_loaded = False
        self._s3_ok = True
        self._stopping = False

    def starting(self, phase: str) -> None:
        """Start-up is at ``phase`` (``loading_model``, ``connecting_to_kafka``, ...): liveness holds
        for up to ``startup_timeout_s`` from the first call, readiness fails naming the phase."""
        now = self._clock()
        with self._lock:
            self._phase = phase
            if self._started_at is None:
                self._started_at = now

    def beat(self) -> None:
        """The loop is alive; call once per loop iteration. The first one ends start-up."""
        now = self._clock()
        with self._lock:
            self._last_beat = now
            self._beats += 1
            self._phase = None

    def set_broker_connected(self, connected: bool) -> None:
        with self._lock:
            self._broker_connected = connected

    def set_assignment(self, n_partitions: int) -> None:
        if n_partitions < 0:
            raise ValueError("n_partitions must be >= 0")
        with self._lock:
            self._partitions = n_partitions

    def set_model_loaded(self, loaded: bool) -> None:
        with self._lock:
            self._model_loaded = loaded

    def set_s3_ok(self, ok: bool) -> None:
        with self._lock:
            self._s3_ok = ok

    def set_stopping(self) -> None:
        """Shutdown began: readiness fails from now on; liveness holds while the loop drains."""
        with self._lock:
            self._stopping = True

    def liveness(self) -> HealthReport:
        with self._lock:
            now = self._clock()
            since_beat = now - self._last_beat
            beats, phase, started_at = self._beats, self._phase, self._started_at
        if phase is not None and started_at is not None:
            starting_s = now - started_at
            ok = starting_s <= self.startup_timeout_s
            name = "starting_in_time"
            body: dict[str, object] = {"phase": phase, "starting_s": round(starting_s, 3)}
            body["startup_timeout_s"] = self.startup_timeout_s
        else:
            ok = since_beat <= self.stall_after_s
            name = "loop_beating"
            body = {"seconds_since_beat": round(since_beat, 3), "stall_after_s": self.stall_after_s}
        body = {
            "status": "ok" if ok else "fail",
            "failing": [] if ok else [name],
            "checks": {name: ok},
            **body,
            "beats": beats,
        }
        return HealthReport(ok, () if ok else (name,), body)

    def readiness(self) -> HealthReport:
        with self._lock:
            since_beat = self._clock() - self._last_beat
            partitions, phase = self._partitions, self._phase
            checks = {
                "started": phase is None,
                "loop_beating": since_beat <= self.stall_after_s,
                "broker_connected": self._broker_connected,
                "partitions_assigned": partitions > 0,
                "model_loaded": self._model_loaded,
                "s3_ok": self._s3_ok,
                "not_stopping": not self._stopping,
            }
        if not self.require_assignment:
            del checks["partitions_assigned"]
        failing = tuple(name for name, passed in checks.items() if not passed)
        body = {
            "status": "fail" if failing else "ok",
            "failing": list(failing),
            "checks": checks,
            "partitions": partitions,
            "idle": partitions == 0,
            **({"phase": phase} if phase is not None else {}),
        }
        return HealthReport(not failing, failing, body)
