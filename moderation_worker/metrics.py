"""Every metric the worker exports, behind small named methods, in a registry of its own.

The registry is never the process-global one, so tests and two workers in one process never clash.
``exposition()`` renders it the way ``/metrics`` serves it (see ``health_server``).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder

log = logging.getLogger(__name__)

OUTCOMES = ("result", "dead_letter", "retry")
DECISIONS = ("allow", "review", "block")
STAGES = ("fetch", "decode", "score", "publish", "commit", "batch")
CACHES = ("feature", "verdict")

# A fetch from S3 takes milliseconds, a scoring batch on a large model seconds, a stalled publish or
# commit up to the delivery timeout: buckets span 1 ms to 5 minutes.
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
)  # fmt: skip
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)


def _label(value: object) -> str:
    """Label text for a plain string or an enum member (``ErrorCode.CORRUPT_IMAGE`` -> ``corrupt_image``)."""
    return str(value.value if isinstance(value, Enum) else value)


def _check(name: str, value: object, allowed: tuple[str, ...]) -> str:
    text = _label(value)
    if text not in allowed:
        # A typo here would silently create a new time series; fail where the mistake is made.
        raise ValueError(f"unknown {name} {text!r}; expected one of {', '.join(allowed)}")
    return text


class _GpuMemoryCollector:
    """CUDA memory this process holds, read at scrape time.

    Reads torch only if the process has already imported it (the model stage does): importing torch
    here would cost seconds and hundreds of MB in a worker that never uses it, and a process that never
    imported torch holds no CUDA memory through it. Reports nothing until CUDA is initialised, so a
    scrape never creates a CUDA context on its own.
    """

    _ALLOCATED = "moderation_gpu_memory_allocated_bytes"
    _RESERVED = "moderation_gpu_memory_reserved_bytes"

    def describe(self) -> list[Metric]:
        return list(self._families())

    def collect(self) -> list[Metric]:
        allocated, reserved = self._families()
        torch = sys.modules.get("torch")
        try:
            cuda = getattr(torch, "cuda", None)
            if cuda is not None and cuda.is_available() and cuda.is_initialized():
                for index in range(cuda.device_count()):
                    device = f"cuda:{index}"
                    allocated.add_metric([device], float(cuda.memory_allocated(index)))
                    reserved.add_metric([device], float(cuda.memory_reserved(index)))
        except Exception:  # a scrape must never fail because of the GPU probe
            log.debug("gpu memory probe failed", exc_info=True)
            return []
        return [allocated, reserved]

    def _families(self) -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily(self._ALLOCATED, "CUDA memory held by tensors.", labels=["device"]),
            GaugeMetricFamily(
                self._RESERVED, "CUDA memory reserved by the caching allocator.", labels=["device"]
            ),
        )


class WorkerMetrics:
    """Every metric the worker exports, in a ``CollectorRegistry`` of its own.

    The worker calls the named methods and never touches prometheus objects. Unknown outcomes,
    decisions, stages and caches raise ``ValueError``: labels come from fixed vocabularies.
    """

    def __init__(self, *, gpu: bool = True) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self._events = Counter(
            "moderation_events_total",
            "Events finished, by outcome (result, dead_letter, retry) and decision (none unless a result).",
            ["outcome", "decision"],
            registry=r,
        )
        self._dead_letters = Counter(
            "moderation_dead_letters_total",
            "Events sent to the dead-letter topic, by code.",
            ["code"],
            registry=r,
        )
        self._stage_seconds = Histogram(
            "moderation_stage_duration_seconds",
            "Time spent in each stage; 'batch' is one whole batch, poll to commit.",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self._cache_hits = Counter("moderation_cache_hits_total", "Cache hits.", ["cache"], registry=r)
        self._cache_misses = Counter("moderation_cache_misses_total", "Cache misses.", ["cache"], registry=r)
        self._cache_bytes = Gauge(
            "moderation_cache_size_bytes", "Bytes held by a cache.", ["cache"], registry=r
        )
        self._cache_entries = Gauge(
            "moderation_cache_entries", "Entries held by a cache.", ["cache"], registry=r
        )
        self._batch_size = Histogram(
            "moderation_batch_size_events",
            "Events per processed batch.",
            buckets=BATCH_SIZE_BUCKETS,
            registry=r,
        )
        self._in_flight = Gauge(
            "moderation_in_flight_events", "Events polled but not yet committed.", registry=r
        )
        self._retries = Counter(
            "moderation_retries_total", "Transient failures retried, by reason.", ["reason"], registry=r
        )
        self._lag = Gauge(
            "moderation_consumer_lag_records",
            "Records between this worker's position and the partition's high watermark at its last fetch.",
            ["topic", "partition"],
            registry=r,
        )
        self._held = Gauge(
            "moderation_held_partitions",
            "Partitions held back for retry after an infrastructure failure.",
            registry=r,
        )
        self._model_load = Gauge(
            "moderation_model_load_seconds", "Seconds the model took to load at start.", registry=r
        )
        self._model_info = Gauge(
            "moderation_model_info",
            "The loaded model (always 1): its id, revision, dtype, device and scoring strategy.",
            ["model", "revision", "dtype", "device", "strategy"],
            registry=r,
        )
        if gpu:
            r.register(_GpuMemoryCollector())
        # Export every known series at zero from the start, so rate() and absent() work before traffic.
        for decision in DECISIONS:
            self._events.labels("result", decision)
        self._events.labels("dead_letter", "none")
        self._events.labels("retry", "none")
        for stage in STAGES:
            self._stage_seconds.labels(stage)
        for cache in CACHES:
            self._cache_hits.labels(cache)
            self._cache_misses.labels(cache)

    def record_outcome(self, outcome: str, decision: str | None = None, code: str | None = None) -> None:
        """Count one finished event. ``decision`` goes with ``result``; ``code`` with ``dead_letter``."""
        outcome = _check("outcome", outcome, OUTCOMES)
        if decision is not None and outcome != "result":
            raise ValueError(f"a decision goes with outcome 'result', not {outcome!r}")
        if code is not None and outcome != "dead_letter":
            raise ValueError(f"a dead-letter code goes with outcome 'dead_letter', not {outcome!r}")
        decision_label = "none" if decision is None else _check("decision", decision, DECISIONS)
        self._events.labels(outcome, decision_label).inc()
        if outcome == "dead_letter":
            self._dead_letters.labels("unknown" if code is None else _label(code)).inc()

    def observe_stage(self, stage: str, seconds: float) -> None:
        self._stage_seconds.labels(_check("stage", stage, STAGES)).observe(seconds)

    @contextmanager
    def time_stage(self, stage: str) -> Iterator[None]:
        """``with metrics.time_stage("score"): ...`` observes the block's duration, raised or not."""
        label = _check("stage", stage, STAGES)
        start = time.perf_counter()
        try:
            yield
        finally:
            self._stage_seconds.labels(label).observe(time.perf_counter() - start)

    def cache_lookup(self, cache: str, hit: bool) -> None:
        counter = self._cache_hits if hit else self._cache_misses
        counter.labels(_check("cache", cache, CACHES)).inc()

    def set_cache_size(self, cache: str, *, entries: int, size_bytes: int | None = None) -> None:
        """What a cache holds now: always its entries, and its bytes where it is bounded in bytes."""
        label = _check("cache", cache, CACHES)
        self._cache_entries.labels(label).set(entries)
        if size_bytes is not None:
            self._cache_bytes.labels(label).set(size_bytes)

    def observe_batch(self, size: int) -> None:
        self._batch_size.observe(size)

    def set_in_flight(self, n: int) -> None:
        self._in_flight.set(n)

    def record_retry(self, reason: str) -> None:
        """One transient failure that will be retried (``s3_timeout``, ``broker_unavailable``, ...).

        Keep reasons to a small fixed set: each distinct value is a new time series.
        """
        self._retries.labels(_label(reason)).inc()

    def set_held_partitions(self, n: int) -> None:
        self._held.set(n)

    def set_consumer_lag(self, topic: str, partition: int, lag: int) -> None:
        self._lag.labels(topic, str(partition)).set(max(0, lag))

    def forget_partition(self, topic: str, partition: int) -> None:
        """Drop a revoked partition's lag series: another worker reports it now."""
        with contextlib.suppress(KeyError):
            self._lag.remove(topic, str(partition))

    def set_model_load_seconds(self, seconds: float) -> None:
        self._model_load.set(seconds)

    def set_model_info(self, *, model: str, revision: str, dtype: str, device: str, strategy: str) -> None:
        """The one model this process scores with; a dashboard groups by its strategy label, so a
        fleet that silently lost the shared prefix (a new transformers) shows."""
        self._model_info.clear()
        self._model_info.labels(model, revision, dtype, device, strategy).set(1)

    def exposition(self, accept: str = "") -> tuple[bytes, str]:
        """The registry as ``/metrics`` serves it: (body, content type) for an HTTP Accept header.

        Prometheus text format unless the scraper asks for OpenMetrics, as prometheus-client's own
        server does.
        """
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type
