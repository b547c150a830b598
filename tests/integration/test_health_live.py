"""The health endpoints and metrics, scraped over HTTP while a worker runs against the real broker."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from moderation_worker.app import build_runtime
from moderation_worker.errors import StartupError
from moderation_worker.localstack import TansuBroker, create_topics, free_port
from moderation_worker.model.fake import FakeScorer
from tests.integration.conftest import Topics, publish, worker_settings

pytestmark = pytest.mark.integration


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_readiness_and_metrics_follow_the_worker_through_a_run(
    kafka_bootstrap, topics, photo_bucket, make_settings
):
    events = [
        {"event_id": f"h-{n}", "image_url": f"s3://{photo_bucket}/photos/{name}"}
        for n, name in enumerate(["astronaut.png", "coffee.png", "astronaut.png", "camera.png"])
    ]
    events.append({"event_id": "h-missing", "image_url": f"s3://{photo_bucket}/photos/nope.png"})
    publish(kafka_bootstrap, topics.input, events, key=b"one")
    settings = make_settings(health_port=0, health_host="127.0.0.1", idle_timeout_s=60.0, batch_size=2)
    runtime = build_runtime(settings, scorer=FakeScorer())
    thread = threading.Thread(target=runtime.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not runtime.health_server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        base = runtime.health_server.url
        assert _get(f"{base}/livez")[0] == 200
        while runtime.worker.summary.events < len(events) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert runtime.worker.summary.events == len(events)

        status, body = _get(f"{base}/readyz")
        assert status == 200, body
        assert json.loads(body)["partitions"] == 3

        status, text = _get(f"{base}/metrics")
        assert status == 200
        samples = _samples(text)
        results = sum(
            v
            for (name, labels), v in samples.items()
            if name == "moderation_events_total" and ("outcome", "result") in labels
        )
        assert results == 4
        assert samples[("moderation_dead_letters_total", (("code", "object_not_found"),))] == 1
        assert samples[("moderation_cache_hits_total", (("cache", "verdict"),))] == 1  # the repeated photo
        assert samples[("moderation_cache_entries", (("cache", "verdict"),))] == 3
        assert samples[("moderation_stage_duration_seconds_count", (("stage", "fetch"),))] == 4
        assert samples[("moderation_batch_size_events_count", ())] >= 3
        lags = [v for (name, _labels), v in samples.items() if name == "moderation_consumer_lag_records"]
        assert lags and all(lag == 0 for lag in lags)  # caught up, as of the last fetch
    finally:
        runtime.worker.request_stop()
        thread.join(timeout=30)
    # Once stopped, it is no longer ready (and the server is closed with it).
    assert not runtime.health.readiness().ok


def test_readiness_reports_a_broker_that_went_away(s3_endpoint, tmp_path):
    # A broker of this test's own: stopping the session's one would break the other tests.
    with TansuBroker(tmp_path / "kafka") as broker:
        topics = Topics("requests", "results", "review", "dlq")
        create_topics(broker.bootstrap_servers, [topics.input, topics.results, topics.review, topics.dlq])
        settings = worker_settings(
            broker.bootstrap_servers, s3_endpoint, topics, "g-broker", idle_timeout_s=120.0
        )
        runtime = build_runtime(settings, scorer=FakeScorer())
        thread = threading.Thread(target=runtime.run, daemon=True)
        thread.start()
        try:
            assert _eventually(lambda: runtime.health.readiness().ok), runtime.health.readiness().body

            broker.stop()

            assert _eventually(lambda: "broker_connected" in runtime.health.readiness().failing)
            assert runtime.health.liveness().ok  # the loop still turns: no restart needed, only patience
        finally:
            runtime.worker.request_stop()
            thread.join(timeout=60)


def _eventually(condition, timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_the_health_server_answers_before_kafka_connects_and_says_what_start_up_waits_for(
    kafka_bootstrap, topics, make_settings
):
    # Given a worker told to speak SASL to a broker that does not (it bootstraps for ever, silently)
    port = free_port()
    settings = make_settings(
        health_port=port,
        health_host="127.0.0.1",
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism="PLAIN",
        kafka_sasl_username="u",
        kafka_sasl_password="p",
        kafka_bootstrap_timeout_s=7.0,
    )
    outcome: dict[str, BaseException] = {}

    def build() -> None:
        try:
            build_runtime(settings, scorer=FakeScorer()).close()
        except BaseException as exc:
            outcome["error"] = exc

    with capture_logs() as logs:
        thread = threading.Thread(target=build, daemon=True)
        thread.start()
        # I expect /livez up at once and /readyz naming the phase, while the clients still connect
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                status, body = _get(f"http://127.0.0.1:{port}/readyz")
            except OSError:
                time.sleep(0.05)
                continue
            if json.loads(body).get("phase") == "connecting_to_kafka":
                break
            time.sleep(0.05)
        assert json.loads(body)["phase"] == "connecting_to_kafka" and status == 503
        assert _get(f"http://127.0.0.1:{port}/livez")[0] == 200
        thread.join(timeout=60)

    # and the logs to say what it connects to, then that it still waits, then a clear start-up error
    events = [entry["event"] for entry in logs]
    assert "connecting_to_kafka" in events and "still_connecting_to_kafka" in events
    connecting = next(entry for entry in logs if entry["event"] == "connecting_to_kafka")
    assert connecting["security_protocol"] == "SASL_PLAINTEXT"
    assert isinstance(outcome.get("error"), StartupError)
    assert "SASL_PLAINTEXT" in str(outcome["error"])
    with pytest.raises(OSError):  # the health server stopped with the failed start
        _get(f"http://127.0.0.1:{port}/livez")
