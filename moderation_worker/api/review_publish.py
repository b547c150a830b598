"""Flagged API verdicts to the review topic (``MODERATION_API_PUBLISH_FLAGGED``), so moderators see them.

Off the request's path: a handler hands the verdict to a bounded queue and answers at once; one thread
owns the producer (created on first use, so a server whose broker is down still starts and answers).
Best effort by design: the caller already has its answer, so a verdict that cannot be published is
logged (``api_review_publish_failed``, or ``api_review_publish_dropped`` when the queue is full because
the broker is slow or away) and counted, never retried forever, never a reason to fail a request.
"""

from __future__ import annotations

import contextlib
import queue
import threading

import structlog

from moderation_worker.config import Settings
from moderation_worker.events import ModerationResult

log = structlog.get_logger(__name__)

_STOP = object()


class ReviewPublisher:
    def __init__(self, settings: Settings, *, max_pending: int = 1000, on_outcome=None) -> None:
        self._settings = settings
        self._pending: queue.Queue = queue.Queue(maxsize=max_pending)
        self._on_outcome = on_outcome  # called with "published" | "failed" | "dropped": the metrics
        self._producer = None
        self._thread = threading.Thread(target=self._run, name="api-review-publish", daemon=True)
        self._thread.start()

    def publish(self, result: ModerationResult, key: bytes) -> None:
        try:
            self._pending.put_nowait((result, key))
        except queue.Full:
            log.warning("api_review_publish_dropped", event_id=result.event_id, pending=self._pending.qsize())
            self._count("dropped")

    def close(self, timeout_s: float = 10.0) -> None:
        """Send what is queued (within the timeout), then close the producer."""
        with contextlib.suppress(queue.Full):  # the thread is stuck on the broker: stop waiting for it
            self._pending.put(_STOP, timeout=timeout_s)
        self._thread.join(timeout=timeout_s)
        if self._producer is not None:
            self._producer.close(timeout=timeout_s)

    def _run(self) -> None:
        while (item := self._pending.get()) is not _STOP:
            result, key = item
            try:
                future = self._producer_or_new().send(
                    self._settings.review_topic,
                    key=key,
                    value=result.to_json_bytes(),
                    headers=[("event_id", result.event_id.encode()), ("content-type", b"application/json")],
                )
                future.get(timeout=self._settings.delivery_timeout_s)
                self._count("published")
            except Exception as exc:  # the broker's failure, whatever its kind: logged, counted, dropped
                log.warning("api_review_publish_failed", event_id=result.event_id, error=repr(exc))
                self._count("failed")

    def _producer_or_new(self):
        if self._producer is None:
            from kafka import KafkaProducer

            self._producer = KafkaProducer(
                **self._settings.kafka_common(),
                acks="all",
                linger_ms=5,
                max_block_ms=int(self._settings.kafka_bootstrap_timeout_s * 1000),
            )
        return self._producer

    def _count(self, outcome: str) -> None:
        if self._on_outcome is not None:
            self._on_outcome(outcome)
