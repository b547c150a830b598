"""The API's Prometheus metrics, in a registry of its own: requests by endpoint and status, latency,
the batcher's queue and the batch sizes it forms."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ApiMetrics:
    def __init__(self, queue_depth: Callable[[], tuple[int, int]] | None = None) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self._requests = Counter(
            "moderation_api_requests_total",
            "Requests answered, by endpoint and status.",
            ["endpoint", "status"],
            registry=r,
        )
        self._latency = Histogram(
            "moderation_api_request_seconds", "Time to answer, by endpoint.", ["endpoint"],
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self._batch = Histogram(
            "moderation_api_batch_size_requests",
            "Requests per scoring call.",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self._batch_seconds = Histogram(
            "moderation_api_batch_seconds", "Time of one scoring call.", buckets=LATENCY_BUCKETS, registry=r
        )
        self._review = Counter(
            "moderation_api_review_published_total",
            "Flagged API verdicts sent to the review topic, by outcome (published, failed, dropped).",
            ["outcome"],
            registry=r,
        )
        depth = Gauge("moderation_api_queue_requests", "Requests waiting for the model.", registry=r)
        depth_bytes = Gauge(
            "moderation_api_queue_bytes", "Decoded image bytes waiting for the model.", registry=r
        )
        if queue_depth is not None:
            depth.set_function(lambda: queue_depth()[0])
            depth_bytes.set_function(lambda: queue_depth()[1])

    def answered(self, endpoint: str, status: int, seconds: float) -> None:
        self._requests.labels(endpoint, str(status)).inc()
        self._latency.labels(endpoint).observe(seconds)

    def batch(self, size: int, seconds: float) -> None:
        self._batch.observe(size)
        self._batch_seconds.observe(seconds)

    def review_published(self, outcome: str) -> None:
        self._review.labels(outcome).inc()

    def exposition(self, accept: str = "") -> tuple[bytes, str]:
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type
