"""End to end against the real broker and S3 from the session fixtures, with the tiny model loaded
through the production path. Every event must end in the results or the dead-letter topic."""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from kafka import KafkaProducer

from moderation_worker import samples
from moderation_worker.app import build_runtime
from moderation_worker.config import DEFAULT_POLICY_PACK
from moderation_worker.localstack import create_topics
from moderation_worker.model.fake import FakeScorer
from moderation_worker.policies import load_policy_pack
from moderation_worker.readback import read_topic
from tests.integration.conftest import Topics, dlq_headers, outcomes, publish, worker_settings

pytestmark = pytest.mark.integration
DEFAULT_PACK = Path(__file__).resolve().parents[2] / DEFAULT_POLICY_PACK


def _good_events(bucket: str) -> list[dict]:
    events = [
        {
            "event_id": f"photo-{name}",
            "image_url": f"s3://{bucket}/photos/{name}",
            "content_id": name,
            "tenant": "t1",
            "metadata": {"upload": name},
        }
        for name in samples.SAMPLE_PHOTOS
    ]
    events.append({"event_id": "photo-again", "image_url": f"s3://{bucket}/photos/astronaut.png"})
    events.append(
        {
            "event_id": "photo-subset",
            "image_url": f"s3://{bucket}/photos/coffee.png",
            "policies": ["weapons", "drugs"],
        }
    )
    return events


def _bad_events(bucket: str, denied_bucket: str) -> dict[str, dict | bytes]:
    """One event per dead-letter code, each from a real record or object."""
    return {
        "invalid_json": b"{this is not json",
        "invalid_event": {"event_id": "bad-invalid-event", "image_url": 42},
        "unsupported_url": {"event_id": "bad-url", "image_url": "https://example.com/cat.jpg"},
        "bucket_not_found": {"event_id": "bad-bucket", "image_url": "s3://no-such-bucket-here/x.png"},
        "object_not_found": {"event_id": "bad-key", "image_url": f"s3://{bucket}/photos/missing.png"},
        "access_denied": {"event_id": "bad-denied", "image_url": f"s3://{denied_bucket}/secret.png"},
        "object_too_large": {"event_id": "bad-large", "image_url": f"s3://{bucket}/bad/huge.png"},
        "not_an_image": {"event_id": "bad-pdf", "image_url": f"s3://{bucket}/bad/report.pdf"},
        "unsupported_image": {"event_id": "bad-ico", "image_url": f"s3://{bucket}/bad/icon.ico"},
        "decompression_bomb": {"event_id": "bad-bomb", "image_url": f"s3://{bucket}/bad/bomb.png"},
        "corrupt_image": {"event_id": "bad-truncated", "image_url": f"s3://{bucket}/bad/truncated.jpg"},
        "unknown_policy": {
            "event_id": "bad-policy",
            "image_url": f"s3://{bucket}/photos/coffee.png",
            "policies": ["lasers"],
        },
    }


@pytest.fixture(scope="module")
def mixed_run(kafka_bootstrap, s3_endpoint, photo_bucket, denied_bucket, tiny_model_dir):
    """Good events and one bad event per dead-letter code, through one worker run, read back."""
    suffix = uuid.uuid4().hex[:12]
    topics = Topics(*(f"{name}-{suffix}" for name in ("requests", "results", "review", "dlq")))
    create_topics(kafka_bootstrap, [topics.input], partitions=3)
    create_topics(kafka_bootstrap, [topics.results, topics.review, topics.dlq])
    good = _good_events(photo_bucket)
    bad = _bad_events(photo_bucket, denied_bucket)
    sent = publish(kafka_bootstrap, topics.input, [*good, *bad.values()])
    settings = worker_settings(
        kafka_bootstrap,
        s3_endpoint,
        topics,
        f"mixed-{suffix}",
        model_id=str(tiny_model_dir),
        max_events=len(sent),
    )
    summary = build_runtime(settings).run()
    results, dead = outcomes(kafka_bootstrap, topics, expected=len(sent))
    return SimpleNamespace(
        topics=topics, good=good, bad=bad, sent=sent, summary=summary, results=results, dead=dead
    )


def test_every_event_ends_in_exactly_one_of_results_or_dead_letters(mixed_run):
    assert mixed_run.summary.events == len(mixed_run.sent)
    assert sorted(r["event_id"] for r in mixed_run.results) == sorted(e["event_id"] for e in mixed_run.good)
    assert len(mixed_run.dead) == len(mixed_run.bad)
    assert len(mixed_run.results) + len(mixed_run.dead) == len(mixed_run.sent)


@pytest.mark.parametrize("code", sorted(_bad_events("b", "d")))
def test_each_bad_event_is_dead_lettered_untouched_with_its_code_and_origin(mixed_run, code):
    by_code = {dlq_headers(r)["dlq.error.code"]: r for r in mixed_run.dead}
    assert code in by_code, f"no dead letter with code {code}; got {sorted(by_code)}"
    record = by_code[code]
    original = mixed_run.bad[code]
    assert record.value == (original if isinstance(original, bytes) else json.dumps(original).encode())
    headers = dlq_headers(record)
    assert headers["dlq.original.topic"] == mixed_run.topics.input
    assert int(headers["dlq.original.offset"]) >= 0 and headers["dlq.original.partition"] in {"0", "1", "2"}
    assert headers["dlq.worker"] == "test-worker" and headers["dlq.attempts"] == "1"
    assert headers["dlq.error.message"]
    if isinstance(original, dict) and isinstance(original.get("event_id"), str):
        assert headers["dlq.event_id"] == original["event_id"]
    expected_fragment = {
        "unsupported_url": "scheme 'https'",
        "decompression_bomb": "100000x100000",
        "object_too_large": "limit",
        "not_an_image": "%PDF",
        "access_denied": "may not read",
        "unknown_policy": "lasers",
        "invalid_event": "image_url",
    }.get(code)
    if expected_fragment:
        assert expected_fragment in headers["dlq.error.message"]


def test_results_carry_the_image_pack_model_and_cache_facts(
    kafka_bootstrap, topics, photo_bucket, make_settings, tiny_model_dir, tmp_path
):
    events = _good_events(photo_bucket)
    # One key: one partition, in order, so the repeat (last) comes a batch after the original (first).
    publish(kafka_bootstrap, topics.input, events, key=b"one-partition")
    document = yaml.safe_load(DEFAULT_PACK.read_text())
    document["policies"][1]["threshold"] = 0.0  # sexual_content_minors: block, triggers on anything
    pack_path = tmp_path / "pack.yaml"
    pack_path.write_text(yaml.safe_dump(document))
    settings = make_settings(model_id=str(tiny_model_dir), max_events=len(events), policy_pack=pack_path)
    build_runtime(settings).run()

    results, dead = outcomes(kafka_bootstrap, topics, expected=len(events))
    assert dead == []
    by_id = {r["event_id"]: r for r in results}
    pack = load_policy_pack(settings.policy_pack_path())
    astronaut = samples.sample_photos(("astronaut.png",))["astronaut.png"]
    first = by_id["photo-astronaut.png"]
    assert first["image"] == {
        "url": f"s3://{photo_bucket}/photos/astronaut.png",
        "sha256": hashlib.sha256(astronaut).hexdigest(),
        "width": 512,
        "height": 512,
        "format": "PNG",
        "byte_size": len(astronaut),
    }
    assert first["policy_pack"] == {"name": pack.name, "version": pack.version, "hash": pack.content_hash}
    assert first["model"]["id"] == str(tiny_model_dir)
    assert first["model"]["dtype"] == "float32" and first["model"]["device"] == "cpu"
    assert first["model"]["strategy"] == "shared_prefix"  # the tiny GLM-4.6V-style model takes it
    assert first["metadata"] == {"upload": "astronaut.png"} and first["tenant"] == "t1"
    assert [p["id"] for p in first["policies"]] == [p.id for p in pack.policies]
    for verdict in first["policies"]:
        assert 0.0 <= verdict["score"] <= 1.0
        assert verdict["triggered"] == (verdict["confidence"] >= verdict["threshold"])
    # The repeated image: same verdict, from the verdict cache.
    again = by_id["photo-again"]
    assert again["cache"]["verdict"] is True
    assert again["policies"] == first["policies"]
    assert [p["id"] for p in by_id["photo-subset"]["policies"]] == ["weapons", "drugs"]
    assert {"fetch", "decode", "score", "total"} <= set(first["timings_ms"])
    # Everything flagged went to moderators too, and nothing else did.
    review = [json.loads(r.value) for r in read_topic(kafka_bootstrap, topics.review, idle_s=1.0)]
    flagged = sorted(r["event_id"] for r in results if r["decision"] != "allow")
    assert sorted(r["event_id"] for r in review) == flagged
    # The pack blocks every image at threshold 0 for one policy, so all but the subset event are blocked.
    assert {r["event_id"] for r in results if r["decision"] == "block"} == {
        e["event_id"] for e in events if "policies" not in e
    }


def test_hostile_records_are_dead_lettered_and_never_crash_the_worker(
    kafka_bootstrap, topics, photo_bucket, make_settings
):
    # Given records that break naive parsers or serializers, around one good event
    hostile = [
        b'{"event_id": "h1", "n": ' + b"9" * 5000 + b"}",  # int too long to convert
        b"[" * 5000 + b"]" * 5000,  # nesting deeper than the recursion limit
        b'{"event_id": "h3", "image_url": "s3://b/k", "metadata": {"x": "\\ud800"}}',  # unencodable
        b'{"event_id": "h4", "image_url": "s3://b/k", "metadata": {"blob": "' + b"x" * 100_000 + b'"}}',
        b"{" + b" " * 1_500_000,  # over the producer's record limit once copied
    ]
    good = {"event_id": "fine", "image_url": f"s3://{photo_bucket}/photos/coffee.png"}
    producer_values = [*hostile, good]
    publish(kafka_bootstrap, topics.input, producer_values[:-2], key=b"k")
    # The 1.5 MB record needs a producer allowed to send it (the broker takes it).
    big = KafkaProducer(bootstrap_servers=kafka_bootstrap, max_request_size=4 * 1024 * 1024)
    big.send(topics.input, key=b"k", value=hostile[-1]).get(timeout=30)
    big.close()
    publish(kafka_bootstrap, topics.input, [good], key=b"k")

    # When a worker runs over them
    summary = build_runtime(make_settings(max_events=len(producer_values)), scorer=FakeScorer()).run()

    # I expect every record accounted for: the hostile ones dead-lettered, the good one moderated
    results, dead = outcomes(kafka_bootstrap, topics, expected=len(producer_values))
    assert [r["event_id"] for r in results] == ["fine"]
    codes = [dlq_headers(r)["dlq.error.code"] for r in dead]
    assert codes == ["invalid_json", "invalid_json", "invalid_event", "invalid_event", "invalid_json"]
    assert dlq_headers(dead[-1])["dlq.original.value_omitted_bytes"] == str(len(hostile[-1]))
    assert summary.events == len(producer_values)
