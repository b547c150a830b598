"""End to end against the real broker and S3 from the session fixtures, with the tiny model loaded
through the production path. Every event must end in the results or the dead-letter topic."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml

from moderation_worker import samples
from moderation_worker.app import build_runtime
from moderation_worker.config import DEFAULT_POLICY_PACK
from moderation_worker.policies import load_policy_pack
from moderation_worker.readback import read_topic
from tests.integration.conftest import dlq_headers, outcomes, publish

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


def test_every_event_ends_in_results_or_dead_letters_with_the_right_code(
    kafka_bootstrap, topics, photo_bucket, denied_bucket, make_settings, tiny_model_dir, s3_endpoint
):
    # Given a mix of good events and one bad event per dead-letter code
    good = _good_events(photo_bucket)
    bad = _bad_events(photo_bucket, denied_bucket)
    sent = publish(kafka_bootstrap, topics.input, [*good, *bad.values()])
    settings = make_settings(model_id=str(tiny_model_dir), max_events=len(sent))

    # When a worker runs until all are processed
    summary = build_runtime(settings).run()

    # I expect every event in exactly one of the two topics, bad ones with their code
    results, dead = outcomes(kafka_bootstrap, topics, expected=len(sent))
    assert summary.events == len(sent)
    assert sorted(r["event_id"] for r in results) == sorted(e["event_id"] for e in good)
    codes = {dlq_headers(r)["dlq.error.code"]: r for r in dead}
    assert sorted(codes) == sorted(bad)
    for code, record in codes.items():
        original = bad[code]
        assert record.value == (original if isinstance(original, bytes) else json.dumps(original).encode())
        headers = dlq_headers(record)
        assert headers["dlq.original.topic"] == topics.input
        assert headers["dlq.error.message"], code
        assert int(headers["dlq.original.offset"]) >= 0
        assert headers["dlq.worker"] == "test-worker"
    assert "scheme 'https'" in dlq_headers(codes["unsupported_url"])["dlq.error.message"]
    assert "100000x100000" in dlq_headers(codes["decompression_bomb"])["dlq.error.message"].replace(" ", "")


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
    pack = load_policy_pack(settings.policy_pack)
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
