"""Flagged API verdicts reach the review topic (a real broker), and per-key rate limits answer 429."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from kafka import KafkaConsumer

from moderation_worker.api.keys import new_key
from moderation_worker.localstack import free_port
from moderation_worker.model.fake import FakeScorer
from tests.api.conftest import data_url, png

pytestmark = [pytest.mark.integration]


def _flag_weapons(request, prompt: str) -> float:
    return 0.97 if "weapon" in prompt.lower() else 0.01


def _records(consumer: KafkaConsumer, wanted: int, timeout_s: float = 60) -> list:
    records, deadline = [], time.monotonic() + timeout_s
    while len(records) < wanted and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=500).values():
            records.extend(batch)
    return records


def test_flagged_api_verdicts_are_published_to_the_review_topic_and_allowed_ones_are_not(
    serve_api, kafka_bootstrap, topic_factory, kafka_consumer_config
):
    review_topic = topic_factory("api-review")
    served = serve_api(
        scorer=FakeScorer(_flag_weapons),
        publish_flagged=True,
        settings={"kafka_bootstrap_servers": kafka_bootstrap, "review_topic": review_topic},
    )
    url = f"{served.url}/v1/moderate"
    flagged = httpx.post(url, json={"event_id": "flag-1", "content_id": "c-1", "image_url": data_url(png())})
    allowed = httpx.post(
        url, json={"event_id": "allow-1", "image_url": data_url(png()), "policies": ["scam_spam"]}
    )
    assert flagged.json()["decision"] != "allow" and allowed.json()["decision"] == "allow"

    consumer = KafkaConsumer(review_topic, **kafka_consumer_config)
    try:
        [record] = _records(consumer, 1)
        assert not _records(consumer, 1, timeout_s=3)  # and nothing else: the allowed verdict is not there
    finally:
        consumer.close()
    assert record.key == b"c-1" and dict(record.headers)["event_id"] == b"flag-1"
    published = json.loads(record.value)
    assert published == flagged.json()  # the record the API answered, byte for byte the same fields
    served.api.close()  # flushes and closes the producer
    metrics = httpx.get(f"{served.url}/metrics").text
    assert 'moderation_api_review_published_total{outcome="published"} 1.0' in metrics


def test_a_broker_that_is_away_never_fails_or_delays_the_answer(serve_api):
    served = serve_api(
        publish_flagged=True,
        scorer=FakeScorer(_flag_weapons),
        settings={"kafka_bootstrap_servers": f"127.0.0.1:{free_port()}", "kafka_bootstrap_timeout_s": 1},
    )
    response = httpx.post(f"{served.url}/v1/moderate", json={"event_id": "e", "image_url": data_url(png())},
                          timeout=30)  # fmt: skip
    assert response.status_code == 200 and response.json()["decision"] != "allow"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # the failure is counted, off the request's path
        if (
            'moderation_api_review_published_total{outcome="failed"} 1.0'
            in httpx.get(f"{served.url}/metrics").text
        ):
            break
        time.sleep(0.2)
    else:
        pytest.fail("the failed publish was never counted")


def test_a_key_over_its_rate_gets_429_with_retry_after_and_other_keys_are_untouched(serve_api):
    slow_key, slow_entry = new_key("slow")
    other_key, other_entry = new_key("other")
    served = serve_api(keys=(slow_entry, other_entry), rate_per_key=0.5)  # bursts of 1, then one per 2 s
    body = {"event_id": "r", "image_url": data_url(png())}

    def call(key: str) -> httpx.Response:
        return httpx.post(f"{served.url}/v1/moderate", json=body, headers={"Authorization": f"Bearer {key}"},
                          timeout=30)  # fmt: skip

    assert call(slow_key).status_code == 200
    refused = call(slow_key)
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limited"
    assert int(refused.headers["Retry-After"]) >= 1
    assert call(other_key).status_code == 200
