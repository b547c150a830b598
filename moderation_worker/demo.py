"""``moderation-worker demo``: the whole job on an embedded local stack, no Docker.

Starts tansu (Kafka protocol) and SeaweedFS (S3) on loopback from their PyPI packages, creates the
topics and a bucket, uploads real sample photos and a few bad objects, publishes an event for each
(plus some malformed events), runs the worker until every event is accounted for, prints the
verdicts and dead letters, and stops everything it started.

If the configured model is not on this machine, the demo (and only the demo) says so and uses a
tiny randomly initialised GLM-4.6V-style model built in code: the pipeline is real, the verdicts
are meaningless. ``run`` never swaps models.
"""

from __future__ import annotations

import json
import shutil
import signal
import tempfile
import uuid
from pathlib import Path

from kafka import KafkaProducer
from pydantic import SecretStr

from moderation_worker import samples
from moderation_worker.config import Settings
from moderation_worker.localstack import LocalStack, create_bucket, create_topics
from moderation_worker.policies import load_policy_pack
from moderation_worker.readback import read_topic
from moderation_worker.specialists import demo as specialists_demo

BUCKET = "moderation-demo"
_RULE = "-" * 100


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    # Raise instead of dying, so the `finally` blocks stop the broker and S3 and remove their data.
    raise SystemExit(128 + signum)


def run_demo(settings: Settings, *, keep_data: bool = False, review: bool = False) -> int:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)  # the worker takes SIGTERM over while it runs
    load_policy_pack(settings.policy_pack_path())  # a bad pack stops the demo before it starts anything
    data_dir = Path(tempfile.mkdtemp(prefix="moderation-demo-"))
    print(f"Starting the embedded stack (tansu + SeaweedFS on 127.0.0.1) in {data_dir} ...")
    try:
        with LocalStack(data_dir) as stack:
            demo_settings = _settings_for(settings, stack)
            create_topics(stack.bootstrap_servers, [demo_settings.input_topic], partitions=3)
            create_topics(
                stack.bootstrap_servers,
                [demo_settings.results_topic, demo_settings.review_topic, demo_settings.dlq_topic],
            )
            s3 = stack.s3_endpoint.client()
            create_bucket(s3, BUCKET)
            events = _upload_and_describe(s3)
            real = specialists_demo.available() and "policy_pack" not in settings.model_fields_set
            if real:  # the specialists are installed and no pack was named: show real verdicts too
                demo_settings, extra = specialists_demo.prepare(s3, BUCKET, data_dir, demo_settings)
                events += extra
            _publish(stack.bootstrap_servers, demo_settings.input_topic, events)
            print(f"Published {len(events)} events to {demo_settings.input_topic!r}.")

            scorer, meaningless = _scorer_for(demo_settings, data_dir)
            from moderation_worker.app import build_runtime

            demo_settings = demo_settings.model_copy(
                update={"max_events": len(events), "idle_timeout_s": 60.0}
            )
            runtime = build_runtime(demo_settings, scorer=scorer)
            summary = runtime.run()
            results = read_topic(
                stack.bootstrap_servers, demo_settings.results_topic, expected=summary.results
            )
            dead = read_topic(stack.bootstrap_servers, demo_settings.dlq_topic, expected=summary.dead_letters)
            _report(events, results, dead, meaningless)
            if real:
                specialists_demo.report(results, _RULE)
            missing = {e["event_id"] for e in events} - _ids(results, dead)
            if missing:
                print(f"MISSING events: {sorted(missing)}")
                return 1
            if review:
                from moderation_worker.review.demo import serve_console

                return serve_console(demo_settings.model_copy(update={"max_events": None}), data_dir)
            return 0
    finally:
        print("Stopped the embedded stack.")
        if not keep_data:
            shutil.rmtree(data_dir, ignore_errors=True)


def _settings_for(settings: Settings, stack: LocalStack) -> Settings:
    endpoint = stack.s3_endpoint
    return settings.model_copy(
        update={
            "kafka_bootstrap_servers": stack.bootstrap_servers,
            "s3_endpoint_url": endpoint.endpoint_url,
            "s3_region": endpoint.region,
            "s3_access_key_id": SecretStr(endpoint.access_key),
            "s3_secret_access_key": SecretStr(endpoint.secret_key),
            "group_id": f"moderation-demo-{uuid.uuid4().hex[:8]}",
            "session_timeout_ms": 6000,
            "heartbeat_interval_ms": 1000,
            "health_port": None,
            "batch_size": 4,  # small batches, so the repeated photo comes after its original was scored
        }
    )


def _upload_and_describe(s3) -> list[dict]:
    events = []
    for name, data in samples.sample_photos().items():
        s3.put_object(Bucket=BUCKET, Key=f"photos/{name}", Body=data)
        events.append(
            {
                "event_id": f"photo-{name}",
                "image_url": f"s3://{BUCKET}/photos/{name}",
                "content_id": name,
                "tenant": "demo",
            }
        )
    # The same photo uploaded again: served from the verdict cache.
    events.append(
        {
            "event_id": "photo-astronaut-again",
            "image_url": f"s3://{BUCKET}/photos/astronaut.png",
            "content_id": "astronaut.png",
            "tenant": "demo",
        }
    )
    bad_objects = {
        "bad/report.pdf": samples.not_an_image(),
        "bad/truncated.jpg": samples.truncated_jpeg(),
        "bad/bomb.png": samples.decompression_bomb_png(),
        "bad/icon.ico": samples.unsupported_format_image(),
    }
    for key, data in bad_objects.items():
        s3.put_object(Bucket=BUCKET, Key=key, Body=data)
        events.append({"event_id": f"bad-{Path(key).name}", "image_url": f"s3://{BUCKET}/{key}"})
    events += [
        {"event_id": "bad-missing-object", "image_url": f"s3://{BUCKET}/photos/nope.jpg"},
        {"event_id": "bad-http-url", "image_url": "https://example.com/cat.jpg"},
        {
            "event_id": "bad-unknown-policy",
            "image_url": f"s3://{BUCKET}/photos/coffee.png",
            "policies": ["lasers"],
        },
    ]
    return events


def _publish(bootstrap: str, topic: str, events: list[dict]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        for event in events:
            # Keyed by content, as upload services should: one content's events stay in order.
            key = (event.get("content_id") or event["event_id"]).encode()
            producer.send(topic, key=key, value=json.dumps(event).encode())
        producer.send(topic, key=b"not-json", value=b"{this is not json")
        events.append({"event_id": "(not json)"})
        producer.flush(timeout=30)
    finally:
        producer.close()


def _scorer_for(settings: Settings, data_dir: Path):
    from moderation_worker.app import load_scorer

    try:
        return load_scorer(settings.model_copy(update={"model_local_files_only": True})), False
    except Exception as exc:
        print(_RULE)
        print(
            f"The configured model {settings.model_id!r} is not available on this machine "
            f"({type(exc).__name__})."
        )
        print("The demo uses a TINY RANDOMLY INITIALISED GLM-4.6V-style model instead, built in code.")
        print("The pipeline is real end to end; the VERDICTS ARE MEANINGLESS. `run` never does this.")
        print(_RULE)
    from moderation_worker.model.tiny import build_tiny_glm4v

    tiny_dir = build_tiny_glm4v(data_dir / "tiny-glm4v")
    return load_scorer(settings.model_copy(update={"model_id": str(tiny_dir)})), True


def _ids(results: list, dead: list) -> set[str]:
    ids = {json.loads(r.value)["event_id"] for r in results}
    for record in dead:
        headers = dict(record.headers)
        ids.add(headers.get("dlq.event_id", b"").decode() or "(not json)")
    return ids


def _report(events: list[dict], results: list, dead: list, meaningless: bool) -> None:
    print(_RULE)
    title = "VERDICTS" + ("  (tiny random model: meaningless)" if meaningless else "")
    print(title)
    print(f"{'event_id':<34} {'decision':<8} {'triggered policies':<40} {'cache':<8} {'ms':>7}")
    for record in sorted(results, key=lambda r: json.loads(r.value)["event_id"]):
        result = json.loads(record.value)
        triggered = ",".join(p["id"] for p in result["policies"] if p["triggered"]) or "-"
        cache = (
            "verdict" if result["cache"]["verdict"] else ("feature" if result["cache"]["feature"] else "miss")
        )
        print(
            f"{result['event_id']:<34} {result['decision']:<8} {triggered[:40]:<40} {cache:<8} "
            f"{result['timings_ms'].get('total', 0):>7.1f}"
        )
    print(_RULE)
    print("DEAD LETTERS")
    print(f"{'event_id':<34} {'code':<20} reason")
    for record in dead:
        headers = {k: v.decode() for k, v in record.headers}
        print(
            f"{headers.get('dlq.event_id') or '(not json)':<34} {headers['dlq.error.code']:<20} "
            f"{headers['dlq.error.message'][:90]}"
        )
    print(_RULE)
    print(f"{len(events)} events: {len(results)} verdicts, {len(dead)} dead letters.")
