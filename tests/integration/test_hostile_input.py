"""Hostile input through a real broker and a real S3: nothing a producer or an object store does stalls
the worker, and every event ends in the results or the dead-letter topic.

Misbehaving objects come from ``tests.hostile_s3.HostileS3``, an endpoint in front of the session's
SeaweedFS that trickles or fails chosen keys and passes every other request through unchanged.
"""

from __future__ import annotations

import json
import signal
import threading

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from moderation_worker.app import build_runtime
from moderation_worker.model.fake import FakeScorer
from tests.hostile_records import RawHeaderKey, png_with_oversized_metadata
from tests.hostile_s3 import HostileS3, wait_until
from tests.integration.conftest import dlq_headers, outcomes, publish, start_worker

pytestmark = [pytest.mark.integration]


def _run(runtime, *, timeout_s: float = 90.0) -> None:
    """Run the worker to its stop condition; fail (and stop it) if it does not get there in time."""
    thread = threading.Thread(target=runtime.run, daemon=True, name="worker-under-test")
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        summary = runtime.worker.summary
        runtime.worker.request_stop()
        thread.join(30)
        pytest.fail(f"the worker stalled: {summary.events} events done, {summary.retries} retries")


@pytest.fixture
def hostile(s3_endpoint):
    with HostileS3(s3_endpoint.endpoint_url, interval_s=1.0) as server:
        yield server


def test_a_record_whose_header_key_is_not_utf8_is_dead_lettered_and_only_it_is_skipped(
    kafka_bootstrap, topics, photo_bucket, make_settings
):
    # Given, in one partition and one producer batch, good records before and after one whose header
    # key is not UTF-8 (kafka-python 3.0.12 stalls poll() for ever on it)
    good = [
        {"event_id": f"good-{n}", "image_url": f"s3://{photo_bucket}/photos/coffee.png"} for n in range(4)
    ]
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", linger_ms=200)
    try:
        for n, event in enumerate(good):
            if n == 2:
                producer.send(
                    topics.input,
                    key=b"same",
                    value=b'{"event_id": "bad-header", "image_url": "s3://x/y.png"}',
                    headers=[("trace", b"t-1"), (RawHeaderKey(b"\xff\xfe-key"), b"v")],
                )
            producer.send(topics.input, key=b"same", value=json.dumps(event).encode())
        producer.flush(timeout=30)
    finally:
        producer.close()
    runtime = build_runtime(make_settings(max_events=5), scorer=FakeScorer())

    # When the worker runs
    _run(runtime)

    # I expect every good record's verdict, and the bad one alone in the dead letters, named and copied
    results, dead = outcomes(kafka_bootstrap, topics, expected=5)
    assert sorted(r["event_id"] for r in results) == sorted(e["event_id"] for e in good)
    [letter] = dead
    headers = dlq_headers(letter)
    assert headers["dlq.error.code"] == "corrupt_record"
    assert headers["dlq.original.offset"] == "2"  # third in its partition, between the good ones
    partition = headers["dlq.original.partition"]
    assert f"{topics.input} partition {partition} offset 2" in headers["dlq.error.message"]
    assert headers["dlq.event_id"] == "bad-header"
    assert letter.key == b"same" and b"bad-header" in letter.value
    assert headers["trace"] == "t-1" and headers["\\xff\\xfe-key"] == "v"  # the key escaped, printable


def test_trickling_and_always_failing_objects_end_as_dead_letters_while_the_rest_flows(
    kafka_bootstrap, topics, photo_bucket, make_settings, hostile
):
    # Given one partition where objects that trickle (headers or body) or that the store always fails
    # (500, or a 400 no allowlist knows) sit between good ones, and a store serving everything else
    bad_keys = ["trickle-body.png", "trickle-headers.png", "always-500.png", "bad-request.png"]
    events = []
    for n, key in enumerate(bad_keys):
        events.append({"event_id": f"ok-{n}", "image_url": f"s3://{photo_bucket}/photos/chelsea.png"})
        events.append({"event_id": f"bad-{key}", "image_url": f"s3://{photo_bucket}/bad/{key}"})
    events.append({"event_id": "ok-last", "image_url": f"s3://{photo_bucket}/photos/camera.png"})
    publish(kafka_bootstrap, topics.input, events, key=b"one-partition")
    settings = make_settings(
        s3_endpoint_url=hostile.endpoint_url,
        fetch_timeout_s=1.5,
        object_max_attempts=3,
        max_events=len(events),
        verdict_cache_entries=0,
    )
    runtime = build_runtime(settings, scorer=FakeScorer())

    _run(runtime, timeout_s=120)

    # I expect every good event's verdict, in order, and each bad object dead-lettered once as
    # retries_exhausted with its last error, after the bounded number of attempts
    results, dead = outcomes(kafka_bootstrap, topics, expected=len(events))
    assert [r["event_id"] for r in results] == [
        e["event_id"] for e in events if e["event_id"].startswith("ok")
    ]
    by_id = {dlq_headers(d)["dlq.event_id"]: dlq_headers(d) for d in dead}
    assert sorted(by_id) == sorted(f"bad-{key}" for key in bad_keys)
    for key in bad_keys:
        headers = by_id[f"bad-{key}"]
        assert headers["dlq.error.code"] == "retries_exhausted", headers
        assert headers["dlq.attempts"] == "3"
    assert "did not finish within 1.5 s" in by_id["bad-trickle-body.png"]["dlq.error.message"]
    assert "did not finish within 1.5 s" in by_id["bad-trickle-headers.png"]["dlq.error.message"]
    assert "InternalError" in by_id["bad-always-500.png"]["dlq.error.message"]
    assert "BadRequest" in by_id["bad-bad-request.png"]["dlq.error.message"]
    assert hostile.count("upstream") > 0  # the store kept serving the good objects meanwhile


def test_one_failing_object_alone_in_the_worker_is_dead_lettered_once_a_probe_shows_the_store_serves(
    kafka_bootstrap, topics, make_settings, hostile, bucket_factory
):
    # Given a single event, whose object always fails: no other fetch can show that the store serves
    bucket = bucket_factory("probe")
    events = [{"event_id": "lonely", "image_url": f"s3://{bucket}/always-500.png"}]
    publish(kafka_bootstrap, topics.input, events)
    settings = make_settings(s3_endpoint_url=hostile.endpoint_url, object_max_attempts=2, max_events=1)
    runtime = build_runtime(settings, scorer=FakeScorer())

    _run(runtime)

    _, dead = outcomes(kafka_bootstrap, topics, expected=1)
    [headers] = [dlq_headers(d) for d in dead]
    assert headers["dlq.error.code"] == "retries_exhausted"
    assert hostile.count("upstream") >= 1  # the probe: a GET of a missing key, answered NoSuchKey


def test_a_key_with_dot_segments_is_refused_and_never_reaches_the_store(
    kafka_bootstrap, topics, photo_bucket, make_settings, hostile
):
    # "tenant-a/../photos/astronaut.png" normalised would read another prefix's object
    events = [
        {"event_id": "dots", "image_url": f"s3://{photo_bucket}/tenant-a/../photos/astronaut.png"},
        {"event_id": "dot", "image_url": f"s3://{photo_bucket}/./photos/astronaut.png"},
    ]
    publish(kafka_bootstrap, topics.input, events)
    runtime = build_runtime(
        make_settings(s3_endpoint_url=hostile.endpoint_url, max_events=2), scorer=FakeScorer()
    )

    _run(runtime)

    results, dead = outcomes(kafka_bootstrap, topics, expected=2)
    assert results == []
    assert {dlq_headers(d)["dlq.error.code"] for d in dead} == {"unsupported_url"}
    assert hostile.count("upstream") == 0


def test_sigterm_stops_the_worker_within_30_s_while_a_fetch_trickles(
    kafka_bootstrap, topics, photo_bucket, make_settings, hostile, tmp_path
):
    # Given a worker with the default fetch deadline (30 s) and batch budget (120 s), whose batch holds
    # a good event and, after it in the same partition, an object that trickles for ever
    events = [
        {"event_id": "before", "image_url": f"s3://{photo_bucket}/photos/rocket.jpg"},
        {"event_id": "trickling", "image_url": f"s3://{photo_bucket}/bad/trickle-body.png"},
        {"event_id": "after", "image_url": f"s3://{photo_bucket}/photos/rocket.jpg"},
    ]
    publish(kafka_bootstrap, topics.input, events, key=b"one-partition")
    settings = make_settings(
        s3_endpoint_url=hostile.endpoint_url,
        fetch_timeout_s=30.0,
        fetch_batch_timeout_s=120.0,
        idle_timeout_s=600.0,
    )
    worker = start_worker(settings, tmp_path / "worker.log", "--scorer", "fake")
    try:
        assert wait_until(
            lambda: hostile.count("trickle-body") >= 1 or worker.poll() is not None, timeout_s=60
        )
        assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]

        # When it is told to stop while that fetch is in flight
        worker.send_signal(signal.SIGTERM)

        # I expect it to exit cleanly within 30 s: the fetch cut, the good event before it published
        # and committed, the trickling one and what follows left uncommitted for the next owner
        assert worker.wait(timeout=30) == 0, (tmp_path / "worker.log").read_text()[-3000:]
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(timeout=10)
    log = (tmp_path / "worker.log").read_text()
    assert "stop_signal_received" in log and "fetch_cut_off" in log
    results, dead = outcomes(kafka_bootstrap, topics, expected=1)
    assert [r["event_id"] for r in results] == ["before"] and dead == []
    committed = _committed(kafka_bootstrap, settings.group_id, topics.input)
    # its partition committed up to the trickling record, the other two never consumed
    assert [offset for offset in committed.values() if offset is not None] == [1]


def test_a_mix_of_good_events_and_every_hostile_input_ends_with_each_in_results_or_dead_letters(
    kafka_bootstrap, topics, photo_bucket, make_settings, hostile, s3_endpoint
):
    client = s3_endpoint.client()
    client.put_object(Bucket=photo_bucket, Key="odd/big-icc.png", Body=png_with_oversized_metadata("icc"))
    client.put_object(Bucket=photo_bucket, Key="odd/big-ztxt.png", Body=png_with_oversized_metadata("ztxt"))
    photo = f"s3://{photo_bucket}/photos/astronaut.png"
    deep = {"a": 1}
    for _ in range(900):
        deep = {"a": deep}
    bad, odd = f"s3://{photo_bucket}/bad/", f"s3://{photo_bucket}/odd/"
    raw_bad_header = b'{"event_id": "bad-header", "image_url": "s3://b/k.png"}'
    spoofing = [("dlq.error.code", b"spoofed"), ("dlq.attempts", b"99")]
    deep_5000 = b'{"event_id": "deep-5000", "metadata": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    twice = b'{"event_id": "twice", "event_id": "other", "image_url": "s3://b/k.png"}'
    padded = {"event_id": "  padded-id  ", "image_url": photo, "metadata": {" a": 1, "a": 2}}
    records = [  # (key, value, headers, expected outcome: "result" or a dead-letter code)
        (b"k1", {"event_id": "good", "image_url": photo}, [], "result"),
        (b"k1", padded, [], "result"),
        (b"k1", raw_bad_header, [(RawHeaderKey(b"\xff"), b"")], "corrupt_record"),
        (b"k1", b"{not json", spoofing, "invalid_json"),
        (b"k2", {"event_id": "trickle-b", "image_url": bad + "trickle-body.png"}, [], "retries_exhausted"),
        (b"k2", {"event_id": "trickle-h", "image_url": bad + "trickle-headers.png"}, [], "retries_exhausted"),
        (b"k2", {"event_id": "fails-500", "image_url": bad + "always-500.png"}, [], "retries_exhausted"),
        (b"k2", {"event_id": "odd-400", "image_url": bad + "bad-request.png"}, [], "retries_exhausted"),
        (b"k2", {"event_id": "dots", "image_url": bad + "../photos/astronaut.png"}, [], "unsupported_url"),
        (b"k3", {"event_id": "big-icc", "image_url": odd + "big-icc.png"}, [], "result"),
        (b"k3", {"event_id": "big-ztxt", "image_url": odd + "big-ztxt.png"}, [], "result"),
        (b"k3", {"event_id": "deep-900", "image_url": photo, "metadata": deep}, [], "invalid_json"),
        (b"k3", deep_5000, [], "invalid_json"),
        (b"k3", twice, [], "invalid_json"),
        (b"k3", {"event_id": "good-last", "image_url": photo}, [], "result"),
    ]
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", linger_ms=100)
    try:
        for key, value, headers in ((k, v, h) for k, v, h, _ in records):
            body = value if isinstance(value, bytes) else json.dumps(value).encode()
            producer.send(topics.input, key=key, value=body, headers=headers)
        producer.flush(timeout=30)
    finally:
        producer.close()
    settings = make_settings(
        s3_endpoint_url=hostile.endpoint_url,
        fetch_timeout_s=1.5,
        object_max_attempts=3,
        max_events=len(records),
    )
    runtime = build_runtime(settings, scorer=FakeScorer())

    _run(runtime, timeout_s=180)

    results, dead = outcomes(kafka_bootstrap, topics, expected=len(records))
    assert len(results) + len(dead) == len(records)
    by_result = {r["event_id"]: r for r in results}
    expected_results = {
        value["event_id"] for _, value, _, want in records if want == "result" and isinstance(value, dict)
    }
    assert set(by_result) == expected_results
    assert by_result["  padded-id  "]["metadata"] == {" a": 1, "a": 2}  # exactly as sent
    assert by_result["big-icc"]["image"]["width"] == 48  # pixels decoded, metadata left out
    codes = sorted(dlq_headers(d)["dlq.error.code"] for d in dead)
    assert codes == sorted(want for *_, want in records if want != "result")
    [spoofed] = [d for d in dead if d.value == b"{not json"]
    assert [v for k, v in spoofed.headers if k == "dlq.error.code"] == [b"invalid_json"]
    assert dict(spoofed.headers)["dlq.original-header.dlq.error.code"] == b"spoofed"
    assert dict(spoofed.headers)["dlq.original-header.dlq.attempts"] == b"99"


def _committed(bootstrap: str, group: str, topic: str) -> dict[int, int | None]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        return {p: consumer.committed(TopicPartition(topic, p)) for p in range(3)}
    finally:
        consumer.close(autocommit=False)
