"""The consume loop: poll a batch, run the pipeline, publish, commit, back off what failed.

Delivery is at least once. An offset is committed only after the outcomes of every record before it
were acknowledged by the broker; a record whose processing hit an infrastructure failure stops its
partition's progress at that record: the partition is rewound to it and held there for a backoff,
so the worker keeps polling (and its group membership) while S3 is down. A worker killed
at any moment leaves uncommitted records to its successor, which reprocesses them; ``event_id`` is
the idempotency key downstream.

With ``prepare_ahead`` the loop overlaps two batches: while batch N is finished (scored), published
and committed on the loop thread, batch N+1, already polled, is prepared (parsed, fetched, decoded)
on one background thread. Only the loop thread touches the consumer, the producer and the scorer;
the background thread runs ``Pipeline.prepare`` and nothing else (it reads the locked verdict
cache). A prepared batch has no outcomes yet, so nothing of it is published or committed until it is
finished: records of partitions rewound (held for retry, or a failed publish) or revoked while it
waited are dropped from it, and a stop drops all of it. The rewound position, or the next owner's
committed offset, brings those records again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor

import structlog
from kafka import ConsumerRebalanceListener, TopicPartition
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata

from moderation_worker import kafka_records
from moderation_worker.accounting import RunSummary, StopConditions, account
from moderation_worker.cache import BoundedLRUCache
from moderation_worker.errors import StorageUnavailableError, TransientError
from moderation_worker.health import HealthState
from moderation_worker.metrics import WorkerMetrics
from moderation_worker.offsets import (
    commit_offsets,
    first_offsets,
    inbound,
    partition_of,
    split_at_first_retry,
)
from moderation_worker.outcomes import InboundRecord, Outcome
from moderation_worker.pipeline import Pipeline, PreparedBatch
from moderation_worker.prepare_ahead import PreparedAhead
from moderation_worker.publish import OutcomePublisher
from moderation_worker.retry import PartitionBackoff
from moderation_worker.signals import StopSignal

log = structlog.get_logger(__name__)


class Worker:
    def __init__(
        self,
        *,
        consumer,
        publisher: OutcomePublisher,
        pipeline: Pipeline,
        input_topic: str,
        batch_size: int,
        poll_timeout_ms: int,
        prepare_ahead: bool = True,
        backoff: PartitionBackoff,
        metrics: WorkerMetrics,
        health: HealthState,
        caches: Mapping[str, BoundedLRUCache] | None = None,
        stop: StopConditions | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        stop_signal: StopSignal | None = None,
    ) -> None:
        # Records the client cannot parse must come out as records, never as a stalled poll().
        kafka_records.install()
        self._consumer = consumer
        self._publisher = publisher
        self._pipeline = pipeline
        self._input_topic = input_topic
        self._batch_size = batch_size
        self._poll_timeout_ms = poll_timeout_ms
        self._prepare_ahead = prepare_ahead
        self._preparer: ThreadPoolExecutor | None = None  # the background thread, while run() runs
        self._prepared: PreparedAhead | None = None  # the batch prepared ahead, not finished yet
        self._backoff = backoff
        self._metrics = metrics
        self._health = health
        self._caches = dict(caches or {})
        self._stop_conditions = stop or StopConditions()
        self._clock = clock
        self._sleep = sleep
        self._closing = False
        self._stop = stop_signal or StopSignal()
        self._attempts: dict[tuple[str, int, int], int] = {}
        self._storage_held: set[TopicPartition] = set()  # held because S3 failed, until they get through
        self._last_activity = clock()
        self._last_connection_check = float("-inf")
        self.summary = RunSummary()

    # --- the loop ----------------------------------------------------------------------------------

    def run(self) -> RunSummary:
        self._consumer.subscribe([self._input_topic], listener=_Rebalance(self))
        log.info(
            "worker_started",
            topic=self._input_topic,
            batch_size=self._batch_size,
            prepare_ahead=self._prepare_ahead,
        )
        # Idle time counts from here, not from construction: whatever ran in between (loading, a
        # slow start of something else) is not the input topic being idle.
        self._last_activity = self._clock()
        if self._prepare_ahead:
            # One thread: at most one batch is being prepared while one is finished, so what the
            # worker holds stays bounded at two batches.
            self._preparer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prepare")
        try:
            with self._stop.handling_signals():
                while not self._should_stop():
                    self._health.beat()
                    self._release_due_partitions()
                    if self._preparer is None:
                        self._turn()
                    else:
                        self._turn_ahead(self._preparer)
        finally:
            self._shutdown()
        return self.summary

    def request_stop(self) -> None:
        """Stop taking records; the batch being finished is published and committed first, a batch
        only prepared ahead is dropped (nothing of it was published or committed).

        Safe from any thread; signals go through StopSignal, which only sets the same event."""
        self._stop.request()

    def _turn(self) -> None:
        """One batch start to end on this thread: poll, prepare, finish, publish, commit."""
        records = self._poll(timeout_ms=self._poll_timeout_ms)
        if records:
            self._last_activity = self._clock()
            self._metrics.set_in_flight(len(records))
            started = time.perf_counter()
            self._complete(self._pipeline.prepare(records), started=started)

    def _turn_ahead(self, preparer: ThreadPoolExecutor) -> None:
        """Poll batch N+1 and start preparing it, then finish batch N, prepared since last turn.

        Batch N is ``self._prepared`` during the poll, so a rebalance inside the poll drops its
        revoked partitions; batch N+1 is ``self._prepared`` while N is finished, so partitions that
        finishing N rewinds are dropped from it."""
        ready = self._prepared
        if ready is None:
            records = self._poll(timeout_ms=self._poll_timeout_ms)
        else:
            # With a batch ready, take only what the client already holds: never keep it waiting.
            records = self._poll(timeout_ms=0, in_hand=ready.live_count)
        self._prepared = self._submit(preparer, records) if records else None
        self._metrics.set_in_flight(self._records_in_hand() + (ready.live_count if ready else 0))
        if ready is not None:
            self._complete(ready.take(), started=ready.polled_at)

    def _submit(self, preparer: ThreadPoolExecutor, records: list[InboundRecord]) -> PreparedAhead:
        self._last_activity = self._clock()
        polled_at = time.perf_counter()
        return PreparedAhead(records, polled_at, preparer.submit(self._pipeline.prepare, records))

    def _complete(self, prepared: PreparedBatch, *, started: float) -> None:
        """Finish a prepared batch, publish its outcomes, commit, and hold what is to be retried."""
        try:
            if prepared.records:  # else every partition of it was rewound or revoked while it waited
                self._finish_and_publish(prepared, started)
        finally:
            self._metrics.set_in_flight(self._records_in_hand())

    def _finish_and_publish(self, prepared: PreparedBatch, started: float) -> None:
        records = prepared.records
        self._metrics.observe_batch(len(records))
        outcomes = self._pipeline.finish(prepared)
        split = split_at_first_retry(outcomes)
        try:
            t0 = time.perf_counter()
            self._publisher.publish(split.final, self._attempts)
            self._metrics.observe_stage("publish", time.perf_counter() - t0)
        except TransientError as exc:
            log.warning("publish_failed_rewinding_batch", error=str(exc), records=len(records))
            self._health.set_broker_connected(False)
            for tp, offset in first_offsets(records).items():
                self._hold_for_retry(tp, offset, reason="publish", error=str(exc))
            return
        self._health.set_broker_connected(True)
        self._commit(records, split.rewind_to)
        for tp, retry in split.retries.items():
            reason = "storage" if isinstance(retry.error, StorageUnavailableError) else "processing"
            self._hold_for_retry(tp, retry.record.offset, reason=reason, error=str(retry.error))
        self._account(split.final, rewound=set(split.retries))
        self._metrics.observe_stage("batch", time.perf_counter() - started)
        self._report_lag(records)
        for name, cache in self._caches.items():
            self._metrics.set_cache_size(
                name, entries=len(cache), size_bytes=cache.current_size if name == "feature" else None
            )

    def _records_in_hand(self) -> int:
        """Records of the batch prepared ahead (none without prepare_ahead)."""
        return self._prepared.live_count if self._prepared is not None else 0

    def _drop_prepared(self, partitions: Iterable[TopicPartition], *, reason: str) -> None:
        """Leave these partitions out of the batch prepared ahead: they were rewound or revoked."""
        prepared = self._prepared
        if prepared is None:
            return
        partitions = set(partitions)
        dropped = prepared.mark_stale(partitions)
        if dropped:
            log.info(
                "prepared_records_dropped",
                reason=reason,
                records=dropped,
                partitions=sorted(f"{tp.topic}:{tp.partition}" for tp in partitions),
            )

    # --- steps -------------------------------------------------------------------------------------

    def _poll(self, *, timeout_ms: int, in_hand: int = 0) -> list[InboundRecord]:
        """Up to a batch of records, none of held partitions. ``in_hand``: records polled but not
        finished yet, which may all become final outcomes too."""
        max_records = self._batch_size
        if self._stop_conditions.max_events is not None:
            left = self._stop_conditions.max_events - self.summary.events - in_hand
            if left <= 0:
                return []  # the batch in hand may complete the run: read nothing past it
            max_records = min(max_records, left)
        try:
            polled = self._consumer.poll(timeout_ms=timeout_ms, max_records=max_records)
            self._check_broker_connections()
        except KafkaError as exc:
            self._health.set_broker_connected(False)
            log.warning("poll_failed", error=repr(exc))
            self._sleep(min(1.0, timeout_ms / 1000))
            return []
        held = self._backoff.held
        records = [inbound(r) for tp, batch in polled.items() if tp not in held for r in batch]
        held_back = [tp for tp in polled if tp in held]
        for tp in held_back:
            # Prefetched records of a partition that is backing off: drop them and keep its position.
            self._consumer.seek(tp, held[tp])
        if held_back and not records:
            # Only held partitions had data: wait instead of refetching them in a hot loop.
            self._sleep(timeout_ms / 1000)
        records.sort(key=lambda r: (r.topic, r.partition, r.offset))
        return records

    def _check_broker_connections(self) -> None:
        """Readiness follows the client's open broker connections.

        kafka-python's poll() does not raise while the brokers are unreachable; its own metrics
        count open connections, which drop to zero then. Read at most every couple of seconds."""
        now = self._clock()
        if now - self._last_connection_check < 2.0:
            return
        self._last_connection_check = now
        count = self._consumer.metrics().get("consumer-metrics", {}).get("connection-count")
        if count is not None:
            self._health.set_broker_connected(count > 0)

    def _commit(self, records: list[InboundRecord], rewind_to: dict[TopicPartition, int]) -> None:
        offsets = {tp: OffsetAndMetadata(o, "", -1) for tp, o in commit_offsets(records, rewind_to).items()}
        if not offsets:
            return
        t0 = time.perf_counter()
        try:
            self._consumer.commit(offsets=offsets)
        except KafkaError as exc:
            # The group rebalanced under us (CommitFailedError) or the broker is unreachable: the
            # next owner reprocesses from the last commit, and event_id lets downstream drop the
            # duplicates. Nothing is lost.
            if not isinstance(exc, CommitFailedError):
                self._health.set_broker_connected(False)
            log.warning("commit_failed_records_will_be_redelivered", error=repr(exc))
        self._metrics.observe_stage("commit", time.perf_counter() - t0)

    def _hold_for_retry(self, tp: TopicPartition, offset: int, *, reason: str, error: str) -> None:
        """Rewind the partition to its failed record and hold it there until its backoff is over.

        Held, not ``pause()``d: kafka-python 3.0.12 parks prefetched data of a paused partition and,
        once any other partition has been consumed, never hands it back after ``resume()``, so
        the partition would stall for good. Holding keeps polling (and group membership) going
        and drops whatever is prefetched for a held partition.
        """
        key = (tp.topic, tp.partition, offset)
        self._attempts[key] = self._attempts.get(key, 0) + 1
        delay = self._backoff.fail(tp, offset)
        self._consumer.seek(tp, offset)
        self.summary.retries += 1
        self._metrics.record_retry(reason)
        self._metrics.record_outcome("retry")
        log.warning(
            "partition_held_for_retry",
            topic=tp.topic,
            partition=tp.partition,
            offset=offset,
            reason=reason,
            error=error[:500],
            delay_s=round(delay, 2),
            attempt=self._attempts[key],
        )
        if reason == "storage":
            self._storage_held.add(tp)
            self._health.set_s3_ok(False)
        self._metrics.set_held_partitions(len(self._backoff.held))
        # The seek moved this partition back: its records in a batch prepared meanwhile will be polled
        # again, so processing them now would publish them twice (and out of order).
        self._drop_prepared([tp], reason="rewound")

    def _report_lag(self, records: list[InboundRecord]) -> None:
        # highwater() comes with every fetch response: no extra request to the broker.
        for tp in first_offsets(records):
            highwater = self._consumer.highwater(tp)
            if highwater is not None:
                self._metrics.set_consumer_lag(
                    tp.topic, tp.partition, highwater - self._consumer.position(tp)
                )

    def _release_due_partitions(self) -> None:
        if self._backoff.due():
            self._metrics.set_held_partitions(len(self._backoff.held))

    def _account(self, final: list[Outcome], *, rewound: set[TopicPartition]) -> None:
        for tp in {partition_of(o.record) for o in final} - rewound:
            self._backoff.succeed(tp)
            self._storage_held.discard(tp)  # its records went through: S3 answers for it again
        self._health.set_s3_ok(not self._storage_held)
        for outcome in final:
            record = outcome.record
            self._attempts.pop((record.topic, record.partition, record.offset), None)
        account(self.summary, self._metrics, final)

    # --- lifecycle ---------------------------------------------------------------------------------

    def _should_stop(self) -> bool:
        if self._stop.is_set():
            signal_name = self._stop.take_notice()
            if signal_name is not None:  # logged here, never in the handler (see signals.py)
                log.info("stop_signal_received", signal=signal_name)
            self._health.set_stopping()
            return True
        conditions = self._stop_conditions
        if conditions.max_events is not None and self.summary.events >= conditions.max_events:
            log.info("stopping_after_max_events", events=self.summary.events)
            return True
        idle = self._clock() - self._last_activity >= (conditions.idle_timeout_s or float("inf"))
        if idle and not self._backoff.held and self._prepared is None:  # a batch in hand is no idling
            log.info("stopping_after_idle", idle_s=conditions.idle_timeout_s)
            return True
        return False

    def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        # Called inside poll(), between batches: everything finished so far is already committed. A
        # batch prepared ahead is not finished: its records of these partitions go to the next owner.
        self._drop_prepared(revoked, reason="revoked")
        self._backoff.forget(revoked)
        for tp in revoked:
            self._metrics.forget_partition(tp.topic, tp.partition)
            self._storage_held.discard(tp)
        self._health.set_s3_ok(not self._storage_held)
        # Attempt counts of records this worker will no longer see: the new owner counts afresh.
        revoked_keys = {(tp.topic, tp.partition) for tp in revoked}
        self._attempts = {k: v for k, v in self._attempts.items() if k[:2] not in revoked_keys}
        if not self._closing:  # leaving the group at shutdown revokes everything; that is no rebalance
            self.summary.partitions_revoked += len(revoked)
        self._metrics.set_held_partitions(len(self._backoff.held))
        log.info("partitions_revoked", partitions=sorted(f"{tp.topic}:{tp.partition}" for tp in revoked))

    def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        self._health.set_assignment(len(self._consumer.assignment()))
        self._last_activity = self._clock()  # idle time counts from joining, not from start-up
        log.info("partitions_assigned", partitions=sorted(f"{tp.topic}:{tp.partition}" for tp in assigned))

    def _shutdown(self) -> None:
        self._closing = True
        self._health.set_stopping()
        # A batch prepared ahead is dropped: nothing of it was published or committed, so the next
        # owner of its partitions processes it from their committed offsets.
        abandoned, self._prepared = self._prepared, None
        if abandoned is not None:
            log.info("prepared_batch_dropped", reason="stopping", records=abandoned.live_count)
        for name, close in (
            ("consumer", lambda: self._consumer.close(autocommit=False)),  # leaves the group
            ("preparer", lambda: self._stop_preparer(abandoned)),  # before the fetch pool closes
            ("pipeline", self._pipeline.close),
        ):
            try:
                close()
            except Exception as exc:
                log.warning("close_failed", component=name, error=repr(exc))
        log.info(
            "worker_stopped",
            results=self.summary.results,
            dead_letters=self.summary.dead_letters,
            retries=self.summary.retries,
        )

    def _stop_preparer(self, abandoned: PreparedAhead | None) -> None:
        if self._preparer is None:
            return
        # Waits for a prepare still running: it ends within the batch's fetch budget.
        self._preparer.shutdown(wait=True, cancel_futures=True)
        self._preparer = None
        failure = abandoned.failure() if abandoned is not None else None
        if failure is not None:
            # Nobody takes the dropped batch's result: say what its prepare raised instead of losing it.
            log.error("dropped_batch_prepare_failed", error=repr(failure), exc_info=failure)


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, worker: Worker) -> None:
        self._worker = worker

    def on_partitions_revoked(self, revoked):
        self._worker._on_revoked(set(revoked))

    def on_partitions_assigned(self, assigned):
        self._worker._on_assigned(set(assigned))
