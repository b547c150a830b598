"""The console's Prometheus metrics, in a registry of its own.

Counters move as the console works (verdicts ingested, decisions per action); the queue's state
(depth and oldest age per queue, claims held, outbox backlog) is read from the database when
``/metrics`` is scraped, at most once per ``ttl_s``, so every replica reports the shared truth.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import choose_encoder

from moderation_worker.review.models import QUEUES


class _QueueCollector:
    def __init__(self, read: Callable[[], dict], ttl_s: float) -> None:
        self._read = read
        self._ttl_s = ttl_s
        self._lock = threading.Lock()
        self._cached: tuple[float, dict] | None = None

    def describe(self):
        return []

    def collect(self):
        with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._cached[0] > self._ttl_s:
                try:
                    self._cached = (now, self._read())
                except Exception:  # the database is down: readiness says so; a scrape must not fail
                    self._cached = (now, {})
            state = self._cached[1]
        depth = GaugeMetricFamily("moderation_review_queue_depth", "Open items per queue.", labels=["queue"])
        oldest = GaugeMetricFamily(
            "moderation_review_oldest_item_age_seconds",
            "Age of the oldest open item per queue.",
            labels=["queue"],
        )
        for queue in QUEUES:
            depth.add_metric([queue], state.get("counts", {}).get(queue, 0))
            age = state.get("oldest_s", {}).get(queue)
            oldest.add_metric([queue], age or 0.0)
        claims = GaugeMetricFamily("moderation_review_claims_held", "Items claimed under a live lease.")
        claims.add_metric([], state.get("claimed", 0))
        backlog = GaugeMetricFamily(
            "moderation_review_outbox_backlog", "Decisions not yet acknowledged by Kafka."
        )
        backlog.add_metric([], state.get("outbox", 0))
        return [depth, oldest, claims, backlog]


class ConsoleMetrics:
    def __init__(self, read_state: Callable[[], dict] | None = None, *, ttl_s: float = 5.0) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self._ingested = Counter(
            "moderation_review_verdicts_ingested_total",
            "Records the ingester handled, by outcome (stored, duplicate, rejected, not_sampled).",
            ["outcome"],
            registry=r,
        )
        self._ingest_failures = Counter(
            "moderation_review_ingest_failures_total", "Batches rewound after a database failure.", registry=r
        )
        self._ingest_seconds = Histogram(
            "moderation_review_ingest_batch_seconds", "Time to store one polled batch.", registry=r
        )
        self._decisions = Counter(
            "moderation_review_decisions_total", "Decisions taken, by action.", ["action"], registry=r
        )
        self._lag = Gauge(
            "moderation_review_ingest_lag_records",
            "Records between the ingester's position and the partition's high watermark at its last fetch.",
            ["topic", "partition"],
            registry=r,
        )
        for action in ("uphold", "overturn", "escalate"):
            self._decisions.labels(action)
        for outcome in ("stored", "duplicate", "rejected", "not_sampled"):
            self._ingested.labels(outcome)
        if read_state is not None:
            r.register(_QueueCollector(read_state, ttl_s))

    def ingested(self, summary, seconds: float) -> None:
        self._ingested.labels("stored").inc(summary.stored)
        self._ingested.labels("duplicate").inc(summary.duplicates)
        self._ingested.labels("rejected").inc(summary.rejected)
        self._ingested.labels("not_sampled").inc(summary.sampled_out)
        self._ingest_seconds.observe(seconds)

    def ingest_failed(self) -> None:
        self._ingest_failures.inc()

    def decided(self, action: str) -> None:
        self._decisions.labels(action).inc()

    def set_ingest_lag(self, topic: str, partition: int, lag: int) -> None:
        self._lag.labels(topic, str(partition)).set(max(0, lag))

    def forget_partition(self, topic: str, partition: int) -> None:
        with contextlib.suppress(KeyError):
            self._lag.remove(topic, str(partition))

    def exposition(self, accept: str = "") -> tuple[bytes, str]:
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type
