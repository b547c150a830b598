"""The real worker on the local stack, timed: its settings, a backlog of request events, and a run.

Sections 3 and 4 share these; section 5 must not import them (a GPU machine may lack the Kafka and S3
clients), so they live apart from fixtures.py.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from benchmarks.timing import progress

if TYPE_CHECKING:
    from moderation_worker.app import Runtime
    from moderation_worker.config import Settings
    from moderation_worker.localstack import LocalStack
    from moderation_worker.model.base import Scorer


def worker_settings(stack: LocalStack, *, input_topic: str, quick: bool = False, **overrides) -> Settings:
    """A worker's settings for the local stack (``run_worker`` gives each run a consumer group of its own)."""
    from pydantic import SecretStr

    from moderation_worker.config import Settings

    endpoint = stack.s3_endpoint
    values = dict(
        kafka_bootstrap_servers=stack.bootstrap_servers,
        input_topic=input_topic,
        results_topic=f"{input_topic}.results",
        review_topic=f"{input_topic}.review",
        dlq_topic=f"{input_topic}.dlq",
        s3_endpoint_url=endpoint.endpoint_url,
        s3_region=endpoint.region,
        s3_access_key_id=SecretStr(endpoint.access_key),
        s3_secret_access_key=SecretStr(endpoint.secret_key),
        # Group join on tansu takes about half the session timeout: kept short (it is outside the timing),
        # shortest in quick mode, where the smoke test pays for every join.
        session_timeout_ms=2000 if quick else 6000,
        heartbeat_interval_ms=500 if quick else 1000,
        health_port=None,
        worker_id="benchmark",
        idle_timeout_s=120.0,  # a safety net: a run that stalls ends instead of hanging the suite
    )
    values.update(overrides)
    return Settings(**values)


def publish_requests(stack: LocalStack, bucket: str, keys: list[str], *, partitions: int = 3) -> str:
    """A new input topic (and its output topics) holding one request event per key; returns its name."""
    from kafka import KafkaProducer

    from moderation_worker.localstack import create_topics

    topic = f"bench-requests-{uuid.uuid4().hex[:12]}"
    create_topics(stack.bootstrap_servers, [topic], partitions=partitions)
    create_topics(stack.bootstrap_servers, [f"{topic}.results", f"{topic}.review", f"{topic}.dlq"])
    producer = KafkaProducer(bootstrap_servers=stack.bootstrap_servers, acks="all")
    try:
        for index, key in enumerate(keys):
            content_id = f"content-{index:05d}"
            event = {
                "schema_version": 1,
                "event_id": f"bench-{uuid.uuid4().hex}",
                "image_url": f"s3://{bucket}/{key}",
                "content_id": content_id,
                "tenant": "benchmark",
                "source": "benchmarks",
            }
            producer.send(topic, key=content_id.encode(), value=json.dumps(event).encode())
        producer.flush(timeout=60)
    finally:
        producer.close()
    return topic


@dataclass
class WorkerRun:
    """One worker run over a backlog: timed from partition assignment to the last event committed."""

    events: int
    seconds: float
    stages: dict[str, tuple[float, int]]  # stage -> (sum of seconds, observations), from WorkerMetrics
    batches: int
    rebalances: int  # partitions revoked during the run (0 in a clean run)
    scrapes: int = 0  # requests the scrapers made to the health server during the run
    scrape_failures: int = 0

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds


def run_worker(
    settings: Settings, scorer: Scorer, expected: int, *, scrapers: int = 0, scrape_interval_s: float = 0.0
) -> WorkerRun:
    """Run the real worker (build_runtime) until ``expected`` events are done; time the draining.

    The group join (seconds on tansu) is not the worker's throughput, so the clock starts when the
    worker reports its partitions assigned (its readiness state) and stops when its summary counts
    every event as published and committed. A watcher thread samples both every 2 ms.

    ``scrapers``: that many clients, in a process of their own, scrape the worker's health server all
    along (``/metrics``, with ``/livez`` and ``/readyz`` in between), each waiting ``scrape_interval_s``
    between requests (0: as fast as it answers, a flood).
    """
    from moderation_worker.app import build_runtime
    from moderation_worker.metrics import STAGES

    # A consumer group of its own, so every run reads the backlog from the start.
    fresh = {"max_events": expected, "group_id": f"bench-{uuid.uuid4().hex[:12]}"}
    if scrapers:
        fresh |= {"health_port": 0, "health_host": "127.0.0.1"}
    runtime: Runtime = build_runtime(settings.model_copy(update=fresh), scorer=scorer)
    marks: dict[str, float] = {}
    finished = threading.Event()
    scraping = _Scrapers(runtime.health_server.url, scrapers, scrape_interval_s) if scrapers else None

    def watch() -> None:
        while not finished.is_set():
            now = time.monotonic()  # system-wide on Linux: comparable with the scrapers' process
            if "assigned" not in marks and runtime.health.readiness().body["partitions"] > 0:
                marks["assigned"] = now
            if runtime.worker.summary.events >= expected:
                marks["done"] = now
                return
            time.sleep(0.002)

    watcher = threading.Thread(target=watch, name="bench-watch", daemon=True)
    watcher.start()
    try:
        summary = runtime.run()
    finally:
        finished.set()
        watcher.join()
        if scraping is not None:
            scraping.join()
    if summary.results != expected or summary.dead_letters or "done" not in marks or "assigned" not in marks:
        raise RuntimeError(
            f"the worker did not process the backlog cleanly: {summary.results} results, "
            f"{summary.dead_letters} dead letters {dict(summary.dead_letter_codes)}, "
            f"{summary.retries} retries, expected {expected} results"
        )
    registry = runtime.metrics.registry
    stages = {}
    for stage in STAGES:
        labels = {"stage": stage}
        total = registry.get_sample_value("moderation_stage_duration_seconds_sum", labels) or 0.0
        count = registry.get_sample_value("moderation_stage_duration_seconds_count", labels) or 0.0
        stages[stage] = (total, int(count))
    batches = int(registry.get_sample_value("moderation_batch_size_events_count") or 0)
    if summary.partitions_revoked:
        progress(f"warning: {summary.partitions_revoked} partitions revoked during a timed run")
    return WorkerRun(
        expected,
        marks["done"] - marks["assigned"],
        stages,
        batches,
        summary.partitions_revoked,
        **_scrape_counts(scraping, marks),
    )


def _scrape_counts(scraping: _Scrapers | None, marks: dict[str, float]) -> dict[str, int]:
    if scraping is None:
        return {}
    # Inside the timed window only: before the join and after the last commit the worker is idle,
    # and its health server closes with it (connections refused then are no failure of the server).
    requests, failures, kinds = scraping.within(marks["assigned"], marks["done"])
    if failures:
        progress(f"warning: {failures} of {requests} scrapes failed while the worker ran: {kinds}")
    return {"scrapes": requests, "scrape_failures": failures}


class _Scrapers:
    """A separate process of scraper threads (as a real scrape fleet is: not in the worker's GIL)
    scraping a health server until told to stop; answers are counted per millisecond
    of the system-wide monotonic clock, so the worker's timed window can be cut out of them."""

    SCRIPT = r"""
import collections, http.client, json, sys, threading, time
from urllib.parse import urlsplit
address, count, interval = urlsplit(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
paths = ("/metrics", "/metrics", "/livez", "/metrics", "/readyz")
stop, lock, buckets = threading.Event(), threading.Lock(), collections.defaultdict(lambda: [0, 0, set()])
def scrape(turn):
    while not stop.is_set():
        path, turn, failure = paths[turn % len(paths)], turn + 1, ""
        try:
            connection = http.client.HTTPConnection(address.hostname, address.port, timeout=10)
            connection.request("GET", path)
            response = connection.getresponse()
            response.read()
            connection.close()
            if response.status not in (200, 503):  # readiness is 503 between batches: an answer
                failure = "HTTP %d" % response.status
        except OSError as exc:
            failure = type(exc).__name__
        with lock:
            bucket = buckets[int(time.monotonic() * 1000)]
            bucket[0 if not failure else 1] += 1
            if failure:
                bucket[2].add(failure)
        stop.wait(interval)
threads = [threading.Thread(target=scrape, args=(n,), daemon=True) for n in range(count)]
for thread in threads:
    thread.start()
sys.stdin.read()  # until the parent closes it
stop.set()
for thread in threads:
    thread.join(timeout=15)
with lock:
    print(json.dumps({k: [ok, bad, sorted(kinds)] for k, (ok, bad, kinds) in buckets.items()}))
"""

    def __init__(self, base_url: str, count: int, interval_s: float) -> None:
        import subprocess
        import sys

        self._process = subprocess.Popen(
            [sys.executable, "-c", self.SCRIPT, base_url, str(count), str(interval_s)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._buckets: dict[int, list] = {}

    def join(self) -> None:
        output, _ = self._process.communicate(input="", timeout=60)
        self._buckets = {int(k): v for k, v in json.loads(output or "{}").items()}

    def within(self, start: float, end: float) -> tuple[int, int, list[str]]:
        """(requests answered, failures, failure kinds) between two time.monotonic() marks."""
        inside = [v for k, v in self._buckets.items() if start * 1000 <= k < end * 1000]
        kinds = sorted({kind for _, _, names in inside for kind in names})
        return sum(ok + bad for ok, bad, _ in inside), sum(bad for _, bad, _ in inside), kinds
