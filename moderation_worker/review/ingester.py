"""The ingester's Kafka loop: poll the review topic (and the results topic, for the sample), store the
batch in one transaction, and only then commit the offsets. At least once: a crash anywhere redelivers
what was not committed, and ``ingest`` stores each verdict once whatever arrives twice.

A database failure rewinds the batch's partitions and retries after a backoff, never skips. Records
the Kafka client cannot parse come out marked (``kafka_records``) and are kept as rejects. Lag comes
from each fetch's high watermark (``end_offsets`` is wrong on tansu).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import structlog
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata
from sqlalchemy.orm import Session, sessionmaker

from moderation_worker import kafka_records
from moderation_worker.config import Settings
from moderation_worker.review.ingest import IncomingRecord, IngestSummary, ingest
from moderation_worker.review.metrics import ConsoleMetrics
from moderation_worker.review.settings import ReviewSettings
from moderation_worker.review.store import transaction

log = structlog.get_logger(__name__)


def make_review_consumer(settings: Settings, review: ReviewSettings) -> KafkaConsumer:
    kafka_records.install()  # a record no client can parse must not stall the console either
    return KafkaConsumer(
        **settings.kafka_common(),
        group_id=review.group_id,
        enable_auto_commit=False,  # offsets only after the database transaction commits
        auto_offset_reset="earliest",
        max_poll_records=500,
        session_timeout_ms=settings.session_timeout_ms,
        heartbeat_interval_ms=settings.heartbeat_interval_ms,
    )


class Ingester:
    def __init__(
        self,
        *,
        consumer,
        sessions: sessionmaker[Session],
        review_topic: str,
        results_topic: str | None,
        sample_rate: float,
        metrics: ConsoleMetrics | None = None,
        poll_timeout_ms: int = 500,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._consumer = consumer
        self._sessions = sessions
        self._kinds = {review_topic: "flagged"}
        if results_topic and sample_rate > 0:
            self._kinds[results_topic] = "results"
        self._sample_rate = sample_rate
        self._metrics = metrics
        self._poll_timeout_ms = poll_timeout_ms
        self._sleep = sleep
        self._stop = threading.Event()
        self.batches = 0
        self.stored = 0
        self.last_error: str | None = None

    def stop(self) -> None:
        self._stop.set()

    def run(self, *, max_records: int | None = None, idle_timeout_s: float | None = None) -> None:
        """Until stopped (or, for tests and benchmarks, until ``max_records`` were stored or nothing
        came for ``idle_timeout_s``)."""
        self._consumer.subscribe(sorted(self._kinds))
        idle_since = time.monotonic()
        backoff = 0.5
        try:
            while not self._stop.is_set():
                polled = self._poll()
                if not polled:
                    if idle_timeout_s is not None and time.monotonic() - idle_since > idle_timeout_s:
                        return
                    continue
                idle_since = time.monotonic()
                if self._store(polled):
                    backoff = 0.5
                else:
                    self._rewind(polled)
                    self._sleep(backoff)
                    backoff = min(backoff * 2, 30.0)
                if max_records is not None and self.stored >= max_records:
                    return
        finally:
            try:
                self._consumer.close(autocommit=False)
            except Exception:
                log.debug("closing the review consumer failed", exc_info=True)

    def _poll(self) -> dict:
        try:
            return self._consumer.poll(timeout_ms=self._poll_timeout_ms)
        except KafkaError as exc:
            log.warning("review_poll_failed", error=repr(exc))
            self._sleep(1.0)
            return {}

    def _store(self, polled: dict) -> bool:
        records = [
            IncomingRecord(
                topic=r.topic,
                partition=r.partition,
                offset=r.offset,
                key=r.key,
                value=r.value if kafka_records.damage_of(r) is None else _damaged(r),
                kind=self._kinds.get(r.topic, "flagged"),
            )
            for batch in polled.values()
            for r in batch
        ]
        started = time.perf_counter()
        try:
            with transaction(self._sessions) as session:
                summary = ingest(session, records, sample_rate=self._sample_rate)
        except Exception as exc:  # the database: nothing was stored, the batch comes again
            self.last_error = repr(exc)
            log.warning("review_ingest_failed_rewinding", records=len(records), error=repr(exc))
            if self._metrics is not None:
                self._metrics.ingest_failed()
            return False
        self.last_error = None
        self._commit(polled)
        self.batches += 1
        self.stored += summary.stored
        self._report(polled, summary, time.perf_counter() - started)
        return True

    def _commit(self, polled: dict) -> None:
        offsets = {
            tp: OffsetAndMetadata(max(r.offset for r in batch) + 1, "", -1) for tp, batch in polled.items()
        }
        try:
            self._consumer.commit(offsets=offsets)
        except KafkaError as exc:  # redelivered later; ingest stores each verdict once
            log.warning("review_commit_failed_will_be_redelivered", error=repr(exc))

    def _rewind(self, polled: dict) -> None:
        for tp, batch in polled.items():
            self._consumer.seek(tp, min(r.offset for r in batch))

    def _report(self, polled: dict, summary: IngestSummary, seconds: float) -> None:
        if summary.rejected:
            log.warning("review_records_rejected", count=summary.rejected, first_error=summary.errors[0])
        if self._metrics is None:
            return
        self._metrics.ingested(summary, seconds)
        for tp in polled:
            highwater = self._consumer.highwater(tp)
            if highwater is not None:
                self._metrics.set_ingest_lag(tp.topic, tp.partition, highwater - self._consumer.position(tp))


def _damaged(record) -> bytes:
    # Not a verdict: ingest keeps it as a reject, with the reason the client gave in front of it.
    damage = kafka_records.damage_of(record)
    return (
        b"unparseable record: " + (damage.reason.encode() if damage else b"") + b"\n" + (record.value or b"")
    )


__all__ = ["Ingester", "TopicPartition", "make_review_consumer"]
