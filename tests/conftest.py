"""Root fixtures: one real Kafka-protocol broker and one real S3 for the session, unique names per test.

Where the services come from, first match wins:
- External: ``MODERATION_TEST_KAFKA_BOOTSTRAP`` and/or ``MODERATION_TEST_S3_ENDPOINT`` (with
  ``MODERATION_TEST_S3_ACCESS_KEY``, ``MODERATION_TEST_S3_SECRET_KEY``, optional
  ``MODERATION_TEST_S3_REGION``, default us-east-1).
  Set ``MODERATION_TEST_KAFKA_REAL=1`` when the external broker is Apache Kafka, to run ``real_kafka`` tests.
- Docker (opt-in): ``MODERATION_TEST_DOCKER=1`` starts Apache Kafka and MinIO with testcontainers. Without a
  Docker engine the tests that need them skip, with the reason.
- Otherwise: tansu and SeaweedFS from PyPI on free 127.0.0.1 ports (``moderation_worker.localstack``).

S3 outage tests ask for ``s3_server``, which skips unless this session owns the SeaweedFS process.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest
from botocore.exceptions import ClientError

from moderation_worker.localstack import S3Endpoint, SeaweedS3, TansuBroker, create_bucket, create_topics

pytest_plugins = ["tests.browser"]  # the ``browser`` fixture: Debian's chromium driven by Playwright

KAFKA_BOOTSTRAP_ENV = "MODERATION_TEST_KAFKA_BOOTSTRAP"
KAFKA_REAL_ENV = "MODERATION_TEST_KAFKA_REAL"
S3_ENDPOINT_ENV = "MODERATION_TEST_S3_ENDPOINT"
S3_ACCESS_KEY_ENV = "MODERATION_TEST_S3_ACCESS_KEY"
S3_SECRET_KEY_ENV = "MODERATION_TEST_S3_SECRET_KEY"
S3_REGION_ENV = "MODERATION_TEST_S3_REGION"
DOCKER_ENV = "MODERATION_TEST_DOCKER"

# Group join takes about session_timeout_ms / 2 on tansu; kafka-python's 45 s default would cost 23 s a test.
TEST_CONSUMER_SETTINGS: dict[str, Any] = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}

# Tests using any of these (directly or through another fixture) are auto-marked ``integration``.
_SERVICE_FIXTURES = frozenset({"kafka_service", "kafka_bootstrap", "s3_endpoint", "s3_server"})

Source = Literal["external", "docker", "local"]


def _docker_wanted() -> bool:
    return os.environ.get(DOCKER_ENV) == "1"


def _source(external_env: str) -> Source:
    if os.environ.get(external_env):
        return "external"
    return "docker" if _docker_wanted() else "local"


@functools.cache
def _docker_unavailable_reason() -> str | None:
    """None when a Docker engine answers; otherwise why not. Asked once per session."""
    try:
        import docker

        docker.from_env(timeout=5).ping()
    except Exception as exc:  # any failure means "no usable engine": skip, never error
        return f"{DOCKER_ENV}=1 but no Docker engine answers: {exc}"
    return None


def _skip_without_docker() -> None:
    reason = _docker_unavailable_reason()
    if reason:
        pytest.skip(reason)


# ---------------------------------------------------------------------------------------------------
# Hooks
# ---------------------------------------------------------------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get(S3_ENDPOINT_ENV):
        missing = [name for name in (S3_ACCESS_KEY_ENV, S3_SECRET_KEY_ENV) if not os.environ.get(name)]
        if missing:
            raise pytest.UsageError(f"{S3_ENDPOINT_ENV} is set, so {' and '.join(missing)} must be too")


def pytest_report_header(config: pytest.Config) -> str:
    return f"moderation tests: kafka={_source(KAFKA_BOOTSTRAP_ENV)} s3={_source(S3_ENDPOINT_ENV)}"


def _real_kafka_skip_reason() -> str | None:
    source = _source(KAFKA_BOOTSTRAP_ENV)
    if source == "docker" or (source == "external" and os.environ.get(KAFKA_REAL_ENV) == "1"):
        return None
    return (
        "needs a real Apache Kafka (a feature tansu lacks): "
        f"set {DOCKER_ENV}=1 on a machine with Docker, or {KAFKA_BOOTSTRAP_ENV} and {KAFKA_REAL_ENV}=1"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    real_kafka_reason = _real_kafka_skip_reason()
    docker_reason = None if _docker_wanted() else f"needs Docker: set {DOCKER_ENV}=1"
    for item in items:
        if _SERVICE_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)
        if real_kafka_reason and item.get_closest_marker("real_kafka"):
            item.add_marker(pytest.mark.skip(reason=real_kafka_reason))
        if docker_reason and item.get_closest_marker("docker"):
            item.add_marker(pytest.mark.skip(reason=docker_reason))


def pytest_runtest_setup(item: pytest.Item) -> None:
    # Docker-marked tests skip (not error) where MODERATION_TEST_DOCKER=1 but the engine is absent.
    if _docker_wanted() and item.get_closest_marker("docker"):
        _skip_without_docker()


# ---------------------------------------------------------------------------------------------------
# Kafka
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KafkaService:
    """The session's broker. ``broker`` is the tansu process when this session owns one."""

    bootstrap_servers: str
    source: Source
    broker: TansuBroker | None = None


def _kafka_from_docker() -> Iterator[KafkaService]:
    _skip_without_docker()
    try:
        from testcontainers.community.kafka import KafkaContainer
    except ImportError:  # older testcontainers
        from testcontainers.kafka import KafkaContainer

    with KafkaContainer().with_kraft() as container:
        yield KafkaService(container.get_bootstrap_server(), "docker")


@pytest.fixture(scope="session")
def kafka_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaService]:
    source = _source(KAFKA_BOOTSTRAP_ENV)
    if source == "external":
        yield KafkaService(os.environ[KAFKA_BOOTSTRAP_ENV], "external")
    elif source == "docker":
        yield from _kafka_from_docker()
    else:
        with TansuBroker(tmp_path_factory.mktemp("tansu")) as broker:
            yield KafkaService(broker.bootstrap_servers, "local", broker)


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_service: KafkaService) -> str:
    return kafka_service.bootstrap_servers


@pytest.fixture
def kafka_consumer_config(kafka_bootstrap: str) -> dict[str, Any]:
    """kafka-python consumer settings for tests: fast group join, manual commits, read from the start."""
    return {
        "bootstrap_servers": kafka_bootstrap,
        "auto_offset_reset": "earliest",
        "enable_auto_commit": False,
        **TEST_CONSUMER_SETTINGS,
    }


@pytest.fixture
def topic_factory(kafka_bootstrap: str) -> Callable[..., str]:
    """``make(prefix="test", partitions=1) -> name``: creates a topic no other test uses."""

    def make(prefix: str = "test", *, partitions: int = 1) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        create_topics(kafka_bootstrap, [name], partitions=partitions)
        return name

    return make


@pytest.fixture
def group_id_factory() -> Callable[..., str]:
    """``make(prefix="group") -> id``: a consumer group no other test uses."""

    def make(prefix: str = "group") -> str:
        return f"{prefix}-{uuid.uuid4().hex[:12]}"

    return make


# ---------------------------------------------------------------------------------------------------
# S3
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class S3Service(S3Endpoint):
    """The session's S3. ``server`` is the SeaweedFS process when this session owns one (else None)."""

    server: SeaweedS3 | None = None


def _s3_from_env() -> S3Service:
    return S3Service(
        endpoint_url=os.environ[S3_ENDPOINT_ENV],
        access_key=os.environ[S3_ACCESS_KEY_ENV],
        secret_key=os.environ[S3_SECRET_KEY_ENV],
        region=os.environ.get(S3_REGION_ENV) or "us-east-1",
    )


def _s3_from_docker() -> Iterator[S3Service]:
    _skip_without_docker()
    try:
        from testcontainers.community.minio import MinioContainer
    except ImportError as exc:  # MinioContainer imports the `minio` client package
        pytest.skip(f"MinIO container needs `pip install 'testcontainers[minio]'`: {exc}")

    with MinioContainer() as container:
        config = container.get_config()
        yield S3Service(f"http://{config['endpoint']}", config["access_key"], config["secret_key"])


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Service]:
    source = _source(S3_ENDPOINT_ENV)
    if source == "external":
        yield _s3_from_env()
    elif source == "docker":
        yield from _s3_from_docker()
    else:
        with SeaweedS3(tmp_path_factory.mktemp("seaweedfs")) as server:
            yield S3Service(server.endpoint_url, server.access_key, server.secret_key, server.region, server)


@pytest.fixture
def s3_server(s3_endpoint: S3Service) -> Iterator[SeaweedS3]:
    """The session's SeaweedFS, for tests that take S3 away. Running again after the test, whatever it did."""
    server = s3_endpoint.server
    if server is None:
        pytest.skip("stops S3, which this session does not own (external or Docker S3)")
    yield server
    server.start()  # a no-op when running; later tests must not inherit an outage


class _Buckets:
    """Makes buckets no other test uses, and removes them (best effort) afterwards."""

    def __init__(self, s3: S3Service) -> None:
        self.client = s3.client()
        self._made: list[str] = []

    def make(self, prefix: str = "test") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:16]}"
        create_bucket(self.client, name)
        self._made.append(name)
        return name

    def remove_all(self) -> None:
        # Matters for an external S3 (a real account); must not fail a test that left S3 stopped.
        for name in self._made:
            with contextlib.suppress(Exception):
                self._remove(name)
        self.client.close()

    def _remove(self, name: str) -> None:
        with contextlib.suppress(ClientError):  # most buckets have no policy
            self.client.delete_bucket_policy(Bucket=name)
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=name):
            keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
            if keys:
                self.client.delete_objects(Bucket=name, Delete={"Objects": keys})
        self.client.delete_bucket(Bucket=name)


@pytest.fixture
def bucket_factory(s3_endpoint: S3Service) -> Iterator[Callable[..., str]]:
    """``make(prefix="test") -> name``: a new empty bucket, removed after the test."""
    buckets = _Buckets(s3_endpoint)
    yield buckets.make
    buckets.remove_all()


@pytest.fixture(scope="session")
def session_bucket_factory(s3_endpoint: S3Service) -> Iterator[Callable[..., tuple[str, Any]]]:
    """``make(prefix="test") -> (name, client)``: a bucket kept for the session, for data uploaded once."""
    buckets = _Buckets(s3_endpoint)
    yield lambda prefix="test": (buckets.make(prefix), buckets.client)
    buckets.remove_all()


@pytest.fixture(scope="session")
def denied_bucket(session_bucket_factory: Callable[..., tuple[str, Any]]) -> str:
    """A bucket holding ``secret.png`` that the session's credentials may not read: GetObject gets 403
    AccessDenied, through a Deny bucket policy (SeaweedFS applies it even to an admin identity)."""
    bucket, client = session_bucket_factory("denied")
    client.put_object(Bucket=bucket, Key="secret.png", Body=b"\x89PNG\r\n\x1a\n")
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Deny",
                "Principal": "*",
                "Action": ["s3:GetObject"],
                "Resource": [f"arn:aws:s3:::{bucket}/*"],
            }
        ],
    }
    client.put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))
    return bucket


# ---------------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny randomly initialised Glm4v saved with save_pretrained (no download)."""
    from moderation_worker.model.tiny import build_tiny_glm4v

    return build_tiny_glm4v(tmp_path_factory.mktemp("tiny-model"))
