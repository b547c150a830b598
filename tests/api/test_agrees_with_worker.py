"""The API and the worker never disagree about an image: the same event through the worker (real broker,
real S3) and through POST /v1/moderate gives the same record, but for the fields that describe the call."""

from __future__ import annotations

import httpx
import pytest

from moderation_worker import samples
from moderation_worker.app import build_runtime, load_scorer
from tests.integration.conftest import Topics, outcomes, publish, worker_settings

pytestmark = [pytest.mark.integration]

# What describes one call rather than the image: when, by whom, how long, from which cache.
PER_CALL = {"timings_ms", "processed_at", "worker", "cache"}


def test_the_api_answers_the_record_the_worker_publishes_for_the_same_event(
    serve_api, kafka_bootstrap, s3_endpoint, topic_factory, group_id_factory, bucket_factory, tiny_model_dir
):
    # Given two photos in S3, and a worker and an API with the same settings and the tiny model
    bucket = bucket_factory("agree")
    client = s3_endpoint.client()
    names = ("astronaut.png", "coffee.png")
    for name, data in samples.sample_photos(names).items():
        client.put_object(Bucket=bucket, Key=f"photos/{name}", Body=data)
    topics = Topics(*(topic_factory(kind) for kind in ("requests", "results", "review", "dlq")))
    settings = worker_settings(
        kafka_bootstrap, s3_endpoint, topics, group_id_factory(),
        model_id=str(tiny_model_dir), model_local_files_only=True,
    )  # fmt: skip
    events = [
        {"event_id": "agree-1", "image_url": f"s3://{bucket}/photos/astronaut.png", "content_id": "a",
         "tenant": "t1", "source": "tests", "metadata": {"listing": "9f2c", "n": 1}},
        {"event_id": "agree-2", "image_url": f"s3://{bucket}/photos/coffee.png",
         "policies": ["weapons", "drugs"], "submitted_at": "2026-11-21T10:15:02Z"},
    ]  # fmt: skip

    # When the worker processes them from the topic, and the API answers them over HTTP
    publish(kafka_bootstrap, topics.input, events)
    build_runtime(settings.model_copy(update={"max_events": len(events)})).run()
    published, dead = outcomes(kafka_bootstrap, topics, expected=len(events))
    api_settings = {k: getattr(settings, k) for k in ("max_image_edge", "max_image_bytes", "model_id")}
    served = serve_api(scorer=load_scorer(settings), settings=api_settings | {"model_local_files_only": True})
    answered = [httpx.post(f"{served.url}/v1/moderate", json=event, timeout=60) for event in events]

    # Then the records agree, field by field, but for those describing the call
    assert dead == [] and all(response.status_code == 200 for response in answered)
    by_id = {record["event_id"]: record for record in published}
    for response in answered:
        api, worker = response.json(), by_id[response.json()["event_id"]]
        assert set(api) == set(worker)
        assert {k: v for k, v in api.items() if k not in PER_CALL | {"policies"}} == {
            k: v for k, v in worker.items() if k not in PER_CALL | {"policies"}
        }
        # scores within float noise: the worker scored both images in one batch, the API one at a time
        assert [p["id"] for p in api["policies"]] == [p["id"] for p in worker["policies"]]
        for ours, theirs in zip(api["policies"], worker["policies"], strict=True):
            assert ours["score"] == pytest.approx(theirs["score"], abs=1e-5)
            assert [s["source"] for s in ours["sources"]] == [s["source"] for s in theirs["sources"]]
            for mine, other in zip(ours["sources"], theirs["sources"], strict=True):
                assert mine["value"] == pytest.approx(other["value"], abs=1e-5)
            numeric = ("score", "confidence", "sources")
            assert {k: v for k, v in ours.items() if k not in numeric} == {
                k: v for k, v in theirs.items() if k not in numeric
            }
