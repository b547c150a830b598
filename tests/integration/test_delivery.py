"""Delivery guarantees with real processes: killed workers, graceful stops, S3 outages."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from kafka import KafkaConsumer, TopicPartition

from moderation_worker.app import build_runtime
from moderation_worker.model.fake import FakeScorer
from moderation_worker.readback import read_topic
from tests.integration.conftest import outcomes, publish, start_worker

pytestmark = [pytest.mark.integration, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]


def _wait_for_results(
    bootstrap: str, topic: str, at_least: int, timeout_s: float, worker: subprocess.Popen
) -> int:
    """How many results appeared, waiting until at_least did, the worker exited or time ran out."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    try:
        consumer.assign([TopicPartition(topic, 0)])
        consumer.seek_to_beginning()
        seen, deadline = 0, time.monotonic() + timeout_s
        while seen < at_least and time.monotonic() < deadline and worker.poll() is None:
            seen += sum(len(b) for b in consumer.poll(timeout_ms=100).values())
        return seen
    finally:
        consumer.close(autocommit=False)


def _committed(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int | None]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        return {p: consumer.committed(TopicPartition(topic, p)) for p in range(partitions)}
    finally:
        consumer.close(autocommit=False)


def _events(bucket: str, n: int) -> list[dict]:
    photos = ["astronaut.png", "chelsea.png", "coffee.png", "camera.png", "rocket.jpg", "text.png"]
    # Distinct event ids over a few photos; the verdict cache is off in these tests so each one scores.
    return [
        {"event_id": f"ev-{i:04d}", "image_url": f"s3://{bucket}/photos/{photos[i % len(photos)]}"}
        for i in range(n)
    ]


def test_a_worker_killed_mid_stream_loses_nothing(
    kafka_bootstrap, topics, photo_bucket, make_settings, tiny_model_dir, tmp_path
):
    # Given many events and a worker slow enough (the real tiny model, small batches) to kill mid-stream
    events = _events(photo_bucket, 60)
    publish(kafka_bootstrap, topics.input, events)
    settings = make_settings(
        model_id=str(tiny_model_dir),
        batch_size=2,
        verdict_cache_entries=0,
        feature_cache_bytes=0,
        idle_timeout_s=10.0,
    )
    first = start_worker(settings, tmp_path / "first.log")
    try:
        seen = _wait_for_results(kafka_bootstrap, topics.results, at_least=6, timeout_s=90, worker=first)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    assert seen >= 6, (tmp_path / "first.log").read_text()[-3000:]
    before = len(read_topic(kafka_bootstrap, topics.results, idle_s=1.0))
    assert before < len(events), "the first worker finished before it was killed; the test proves nothing"

    # When a successor in the same group takes over
    second = start_worker(settings, tmp_path / "second.log")
    assert second.wait(timeout=180) == 0, (tmp_path / "second.log").read_text()[-3000:]

    # I expect every event accounted for; duplicates only from the killed worker's uncommitted batch
    results, dead = outcomes(kafka_bootstrap, topics, expected=len(events))
    assert dead == []
    counts = Counter(r["event_id"] for r in results)
    assert set(counts) == {e["event_id"] for e in events}
    assert sum(counts.values()) - len(events) <= 3 * settings.batch_size
    committed = _committed(kafka_bootstrap, settings.group_id, topics.input, 3)
    assert sum(v or 0 for v in committed.values()) == len(events)


def test_sigterm_finishes_publishes_and_commits_so_nothing_is_redone(
    kafka_bootstrap, topics, photo_bucket, make_settings, tmp_path
):
    events = _events(photo_bucket, 400)
    publish(kafka_bootstrap, topics.input, events)
    settings = make_settings(batch_size=4, verdict_cache_entries=0, idle_timeout_s=10.0)
    first = start_worker(settings, tmp_path / "first.log", "--scorer", "fake")
    try:
        seen = _wait_for_results(kafka_bootstrap, topics.results, at_least=8, timeout_s=60, worker=first)
        assert seen >= 8, (tmp_path / "first.log").read_text()[-3000:]
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=30) == 0
    finally:
        if first.poll() is None:
            first.kill()
    log = (tmp_path / "first.log").read_text()
    assert "stop_signal_received" in log and "worker_stopped" in log
    done_by_first = len(read_topic(kafka_bootstrap, topics.results, idle_s=1.0))
    assert done_by_first < len(events), "the worker finished before SIGTERM; the test proves nothing"

    second = start_worker(settings, tmp_path / "second.log", "--scorer", "fake")
    assert second.wait(timeout=120) == 0, (tmp_path / "second.log").read_text()[-3000:]
    results, dead = outcomes(kafka_bootstrap, topics, expected=len(events))
    counts = Counter(r["event_id"] for r in results)
    # A graceful stop commits everything it published: no event is processed twice.
    assert dead == [] and len(results) == len(events) and max(counts.values()) == 1


def test_s3_going_away_and_coming_back_loses_nothing_and_dead_letters_nothing(
    kafka_bootstrap, topics, photo_bucket, make_settings, s3_server
):
    events = _events(photo_bucket, 30)
    publish(kafka_bootstrap, topics.input, events)
    settings = make_settings(
        batch_size=5, verdict_cache_entries=0, idle_timeout_s=6.0, max_events=len(events)
    )
    runtime = build_runtime(settings, scorer=FakeScorer())
    s3_readiness: list[bool] = []

    s3_server.stop()
    try:
        thread = threading.Thread(target=runtime.run, daemon=True)
        thread.start()
        # While S3 is down the worker retries with backoff: no results, no dead letters, partitions kept.
        deadline = time.monotonic() + 30
        while runtime.worker.summary.retries < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert runtime.worker.summary.retries >= 3
        s3_readiness.append(runtime.health.readiness().body["checks"]["s3_ok"])
        assert runtime.worker.summary.events == 0
    finally:
        s3_server.start()
    thread.join(timeout=90)
    assert not thread.is_alive()

    results, dead = outcomes(kafka_bootstrap, topics, expected=len(events))
    assert dead == []
    assert sorted(r["event_id"] for r in results) == sorted(e["event_id"] for e in events)
    assert s3_readiness == [False]
    assert runtime.worker.summary.partitions_revoked == 0  # it kept its partitions through the outage
