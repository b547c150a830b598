"""``moderation-worker samples publish|follow``: feed a running stack sample uploads and watch the verdicts.

For a stack that is already up (the compose stack, a staging cluster), where ``demo`` would start its
own: ``publish`` uploads sample images (scikit-image's real photos where installed, else images drawn
with Pillow) and one object that is not an image to a bucket, and publishes an upload event for each;
``follow`` prints every verdict and dead letter as it arrives, one line each. Both use the worker's
own settings (MODERATION_KAFKA_*, MODERATION_S3_*, the topic names).
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
import time
import uuid
from collections.abc import Callable

from botocore.exceptions import BotoCoreError, ClientError
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from moderation_worker import samples
from moderation_worker.config import Settings
from moderation_worker.fetch import make_s3_client
from moderation_worker.localstack.clients import create_bucket


def add_parser(commands, worker_settings: argparse.ArgumentParser) -> None:
    parser = commands.add_parser("samples", help="publish sample uploads to a running stack; print verdicts")
    sample_commands = parser.add_subparsers(dest="samples_command", required=True)
    publish = sample_commands.add_parser(
        "publish", parents=[worker_settings], help="upload sample images and publish an event for each"
    )
    publish.add_argument("--bucket", default="uploads", help="created if missing")
    publish.add_argument("--prefix", default="samples", help="key prefix of the uploaded objects")
    publish.add_argument("--tenant", default="samples")
    follow = sample_commands.add_parser(
        "follow", parents=[worker_settings], help="print each verdict and dead letter, one line each"
    )
    follow.add_argument("--max", type=int, default=None, help="stop after this many records")
    follow.add_argument("--timeout-s", type=float, default=None, help="stop after this long without one")
    follow.add_argument("--from-beginning", action="store_true", help="also what was published before")


def run(settings: Settings, args: argparse.Namespace) -> int:
    if args.samples_command == "publish":
        return _publish_command(settings, args)
    return _follow_command(settings, args)


# --- publish ---------------------------------------------------------------------------------------


def sample_uploads() -> dict[str, bytes]:
    """Real photos where scikit-image is installed, drawn ones otherwise; plus one PDF (a dead letter)."""
    try:
        photos = samples.sample_photos()
    except RuntimeError:
        photos = samples.synthetic_photos()
    return {**photos, "not-an-image.pdf": samples.not_an_image()}


def publish_samples(settings: Settings, *, bucket: str, prefix: str, tenant: str) -> list[dict]:
    """Upload the samples, then publish their events (keyed by content id); the events, in order."""
    s3 = make_s3_client(settings)
    create_bucket(s3, bucket)  # in the client's region; one this account already owns is fine
    run_id = uuid.uuid4().hex[:8]
    events = []
    for name, data in sample_uploads().items():
        key = f"{prefix}/{run_id}/{name}"
        s3.put_object(Bucket=bucket, Key=key, Body=data)
        events.append(
            {
                "event_id": f"sample-{run_id}-{name}",
                "image_url": f"s3://{bucket}/{key}",
                "content_id": name,
                "tenant": tenant,
            }
        )
    producer = KafkaProducer(**settings.kafka_common(), acks="all", max_block_ms=30_000)
    try:
        for event in events:
            producer.send(
                settings.input_topic, key=event["content_id"].encode(), value=json.dumps(event).encode()
            )
        producer.flush(timeout=30)
    finally:
        producer.close(timeout=10)
    return events


def _publish_command(settings: Settings, args: argparse.Namespace) -> int:
    try:
        events = publish_samples(settings, bucket=args.bucket, prefix=args.prefix, tenant=args.tenant)
    except (BotoCoreError, ClientError, KafkaError) as exc:
        print(f"error: {exc}")
        return 1
    for event in events:
        print(f"published {event['event_id']} -> {event['image_url']}")
    print(f"{len(events)} events published to {settings.input_topic!r}")
    return 0


# --- follow ----------------------------------------------------------------------------------------


def describe(topic: str, settings: Settings, value: bytes | None, headers: list) -> str:
    """One line for a record of the results or the dead-letter topic."""
    if topic == settings.dlq_topic:
        named = {key: raw.decode("utf-8", "replace") for key, raw in headers or []}
        return (
            f"dead-letter {named.get('dlq.event_id') or '(no event id)'} "
            f"{named.get('dlq.error.code', '?')}: {named.get('dlq.error.message', '')[:120]}"
        )
    try:
        result = json.loads(value or b"")
        triggered = [p["id"] for p in result["policies"] if p.get("triggered")]
        return f"verdict {result['event_id']} {result['decision']} triggered={','.join(triggered) or '-'}"
    except (ValueError, KeyError, TypeError):
        return f"unreadable record on {topic}"


def follow(
    settings: Settings,
    emit: Callable[[str], None],
    *,
    stop: threading.Event,
    max_records: int | None = None,
    timeout_s: float | None = None,
    from_beginning: bool = False,
) -> int:
    """Print records of the results and dead-letter topics until stopped; how many were printed.

    No consumer group: it assigns every partition itself, so watching never takes records from, or
    commits offsets for, anything else."""
    consumer = KafkaConsumer(**settings.kafka_common(), enable_auto_commit=False, group_id=None)
    try:
        partitions = [
            TopicPartition(topic, partition)
            for topic in (settings.results_topic, settings.dlq_topic)
            for partition in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        consumer.assign(partitions)
        if from_beginning:
            consumer.seek_to_beginning(*partitions)
        else:
            consumer.seek_to_end(*partitions)
        printed, last = 0, time.monotonic()
        while not stop.is_set():
            batch = consumer.poll(timeout_ms=500)
            for tp, records in batch.items():
                for record in records:
                    emit(describe(tp.topic, settings, record.value, record.headers))
                    printed += 1
                    last = time.monotonic()
                    if max_records is not None and printed >= max_records:
                        return printed
            if timeout_s is not None and time.monotonic() - last > timeout_s:
                return printed
        return printed
    finally:
        consumer.close()


def _follow_command(settings: Settings, args: argparse.Namespace) -> int:
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())  # flag only: the poll loop sees it within 0.5 s
    try:
        follow(
            settings,
            lambda line: print(line, flush=True),
            stop=stop,
            max_records=args.max,
            timeout_s=args.timeout_s,
            from_beginning=args.from_beginning,
        )
    except KafkaError as exc:
        print(f"error: {exc}")
        return 1
    return 0
