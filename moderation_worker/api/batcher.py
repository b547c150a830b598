"""Concurrent requests into one scoring call: the one place where API requests meet the scorer.

Handlers announce a request when they start preparing it (``expect``), prepare it (fetch, decode,
verdict-cache lookup: ``Pipeline.prepare_fetched``) and hand it in. One scoring thread takes the first
waiting request and, while more are announced and on their way, waits up to ``max_wait_s`` for them
(up to ``max_batch``); then it runs the pipeline's ``finish`` on all of them at once: one model call
for the lot, split into passes by the scorer's own token budget, so memory stays bounded whatever the
load. Each request gets its own outcome back. A lone request never waits for company that is not
coming: with nothing announced, its call starts at once.

Backpressure, never a crash: the queue is bounded in requests and in decoded-image bytes; a request
that does not fit is refused at once (``QueueFull``: the handler answers 429 with Retry-After). A
request whose client went away, or whose deadline passed while it waited, is dropped before it is
scored.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field

import structlog

from moderation_worker.outcomes import Outcome
from moderation_worker.pipeline import Pipeline, PreparedBatch

log = structlog.get_logger(__name__)


class QueueFull(Exception):
    def __init__(self, waiting: int, waiting_bytes: int) -> None:
        super().__init__(f"{waiting} requests ({waiting_bytes} bytes) are waiting for the model")


class Expired(Exception):
    """The request waited past its deadline, or its client went away, before it was scored."""


@dataclass
class Ticket:
    prepared: PreparedBatch
    size_bytes: int
    deadline: float
    future: Future = field(default_factory=Future)
    cancelled: bool = False

    def cancel(self) -> None:
        """The client is gone or the deadline passed: drop it if it was not scored yet."""
        self.cancelled = True


class Batcher:
    def __init__(
        self,
        pipeline: Pipeline,
        *,
        max_batch: int,
        max_wait_s: float,
        max_requests: int,
        max_bytes: int,
        on_batch=None,
    ) -> None:
        self._pipeline = pipeline
        self._max_batch = max_batch
        self._max_wait_s = max_wait_s
        self._max_requests = max_requests
        self._max_bytes = max_bytes
        self._on_batch = on_batch  # called with (batch size, seconds): the metrics
        self._waiting: deque[Ticket] = deque()
        self._waiting_bytes = 0
        self._announced = 0  # requests being prepared, expected to be submitted soon
        self._lock = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="api-batcher", daemon=True)
        self.calls = 0  # scoring calls made (tests compare it with the requests served)
        self._thread.start()

    @property
    def depth(self) -> tuple[int, int]:
        with self._lock:
            return len(self._waiting), self._waiting_bytes

    @contextmanager
    def expect(self) -> Iterator[None]:
        """Around a request's preparation: while it lasts, a forming batch may wait for this request."""
        with self._lock:
            self._announced += 1
        try:
            yield
        finally:
            with self._lock:
                self._announced -= 1
                self._lock.notify()  # a batch waiting for this request stops waiting if it never comes

    def submit(self, prepared: PreparedBatch, *, size_bytes: int, timeout_s: float) -> Ticket:
        ticket = Ticket(prepared, size_bytes, time.monotonic() + timeout_s)
        with self._lock:
            if self._stop:
                raise QueueFull(len(self._waiting), self._waiting_bytes)
            if len(self._waiting) >= self._max_requests or self._waiting_bytes + size_bytes > self._max_bytes:
                raise QueueFull(len(self._waiting), self._waiting_bytes)
            self._waiting.append(ticket)
            self._waiting_bytes += size_bytes
            self._lock.notify()
        return ticket

    def close(self, timeout_s: float = 30.0) -> None:
        """Stop taking requests; those waiting are scored first."""
        with self._lock:
            self._stop = True
            self._lock.notify()
        self._thread.join(timeout=timeout_s)

    def _take(self) -> list[Ticket] | None:
        with self._lock:
            while not self._waiting:
                if self._stop:
                    return None
                self._lock.wait()
            first_at = time.monotonic()
            while len(self._waiting) < self._max_batch and self._announced > 0 and not self._stop:
                left = self._max_wait_s - (time.monotonic() - first_at)
                if left <= 0:
                    break
                self._lock.wait(left)
            batch = [self._waiting.popleft() for _ in range(min(self._max_batch, len(self._waiting)))]
            self._waiting_bytes -= sum(ticket.size_bytes for ticket in batch)
            return batch

    def _run(self) -> None:
        while (batch := self._take()) is not None:
            now = time.monotonic()
            live = []
            for ticket in batch:
                if ticket.cancelled or ticket.deadline < now:
                    ticket.future.set_exception(Expired())
                else:
                    live.append(ticket)
            if live:
                self._score(live)

    def _score(self, tickets: list[Ticket]) -> None:
        jobs = tuple(job for ticket in tickets for job in ticket.prepared.jobs)
        started = time.perf_counter()
        try:
            outcomes: list[Outcome] = self._pipeline.finish(PreparedBatch(jobs))
        except Exception as exc:  # a bug or a device failure: every waiting request hears of it
            log.exception("api_batch_failed", requests=len(tickets))
            for ticket in tickets:
                ticket.future.set_exception(exc)
            return
        self.calls += 1
        if self._on_batch is not None:
            self._on_batch(len(tickets), time.perf_counter() - started)
        position = 0
        for ticket in tickets:
            count = len(ticket.prepared.jobs)
            ticket.future.set_result(outcomes[position : position + count])
            position += count
