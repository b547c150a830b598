"""Shared pieces of the end-to-end tests: a worker's settings for the session's broker and S3,
topics per test, publishing, and the sample objects uploaded once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from kafka import KafkaProducer
from pydantic import SecretStr

from moderation_worker import samples
from moderation_worker.config import Settings
from moderation_worker.readback import read_topic


@dataclass(frozen=True)
class Topics:
    input: str
    results: str
    review: str
    dlq: str


@pytest.fixture
def topics(topic_factory) -> Topics:
    return Topics(
        input=topic_factory("requests", partitions=3),
        results=topic_factory("results"),
        review=topic_factory("review"),
        dlq=topic_factory("dlq"),
    )


@pytest.fixture(scope="session")
def photo_bucket(session_bucket_factory) -> str:
    """A bucket holding every sample photo under photos/ and each bad object under bad/."""
    bucket, client = session_bucket_factory("photos")
    for name, data in samples.sample_photos().items():
        client.put_object(Bucket=bucket, Key=f"photos/{name}", Body=data)
    for key, data in BAD_OBJECTS.items():
        client.put_object(Bucket=bucket, Key=key, Body=data)
    return bucket


BAD_OBJECTS = {
    "bad/report.pdf": samples.not_an_image(),
    "bad/truncated.jpg": samples.truncated_jpeg(),
    "bad/bomb.png": samples.decompression_bomb_png(),
    "bad/icon.ico": samples.unsupported_format_image(),
    "bad/huge.png": b"\x89PNG\r\n\x1a\n" + b"\x00" * (3 * 1024 * 1024),
}


def worker_settings(
    kafka_bootstrap: str, s3_endpoint, topics: Topics, group_id: str, **overrides
) -> Settings:
    """A worker's settings for the session's broker and S3: short timeouts, no health server."""
    values = dict(
        kafka_bootstrap_servers=kafka_bootstrap,
        group_id=group_id,
        input_topic=topics.input,
        results_topic=topics.results,
        review_topic=topics.review,
        dlq_topic=topics.dlq,
        s3_endpoint_url=s3_endpoint.endpoint_url,
        s3_region=s3_endpoint.region,
        s3_access_key_id=SecretStr(s3_endpoint.access_key),
        s3_secret_access_key=SecretStr(s3_endpoint.secret_key),
        s3_connect_timeout_s=1.0,
        s3_read_timeout_s=5.0,
        s3_max_attempts=1,
        max_image_bytes=2 * 1024 * 1024,
        max_image_edge=224,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
        poll_timeout_ms=200,
        batch_size=8,
        retry_initial_backoff_s=0.2,
        retry_max_backoff_s=1.0,
        health_port=None,
        idle_timeout_s=8.0,
        worker_id="test-worker",
    )
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def make_settings(kafka_bootstrap, s3_endpoint, topics, group_id_factory):
    def make(**overrides) -> Settings:
        return worker_settings(kafka_bootstrap, s3_endpoint, topics, group_id_factory(), **overrides)

    return make


def publish(
    bootstrap: str, topic: str, events: list[dict | bytes], *, key: bytes | None = None
) -> list[bytes]:
    """Publish events (dicts as JSON, bytes as they are), keyed by position unless one key is given
    (then all land in one partition, in order); returns the values sent."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    values = []
    try:
        for n, event in enumerate(events):
            value = event if isinstance(event, bytes) else json.dumps(event).encode()
            values.append(value)
            producer.send(topic, key=key or f"key-{n}".encode(), value=value)
        producer.flush(timeout=30)
    finally:
        producer.close()
    return values


def outcomes(bootstrap: str, topics: Topics, *, expected: int, timeout_s: float = 30) -> tuple[list, list]:
    """(results as dicts, dead-letter records) read back from the beginning."""
    dead = read_topic(bootstrap, topics.dlq, expected=None, timeout_s=timeout_s, idle_s=1.0)
    results = read_topic(
        bootstrap, topics.results, expected=max(0, expected - len(dead)), timeout_s=timeout_s
    )
    return [json.loads(r.value) for r in results], dead


def dlq_headers(record) -> dict[str, str]:
    return {k: v.decode() for k, v in record.headers}


REPO = Path(__file__).resolve().parents[2]


def worker_env(settings: Settings) -> dict[str, str]:
    """The settings as the MODERATION_* environment a deployed worker would get."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODERATION_")}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        elif isinstance(value, (frozenset, list)):
            value = ",".join(sorted(value))
        env[f"MODERATION_{name.upper()}"] = str(value)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def start_worker(settings: Settings, log_path: Path, *args: str) -> subprocess.Popen:
    """``moderation-worker run`` in a subprocess, its output appended to ``log_path``."""
    log = log_path.open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "moderation_worker", "run", *args],
        cwd=REPO,
        env=worker_env(settings),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
