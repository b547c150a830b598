"""The local stack is real: a Kafka-protocol broker and an S3 that behave as the worker needs, and leave
nothing behind."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError, EndpointConnectionError
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from moderation_worker import localstack
from moderation_worker.localstack import (
    LocalStack,
    LocalStackError,
    SeaweedS3,
    TansuBroker,
    create_topics,
    listening_addresses,
    port_is_free,
    s3_client,
)

if TYPE_CHECKING:
    from tests.conftest import KafkaService, S3Service


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _pids_running(argument: str) -> list[int]:
    """Processes whose command line contains ``argument``, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if argument.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def _consume_one(consumer: KafkaConsumer, timeout_s: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=500, max_records=1).values():
            return records[0]
    raise AssertionError(f"no record within {timeout_s} s")


# ---------------------------------------------------------------------------------------------------
# Kafka
# ---------------------------------------------------------------------------------------------------


def test_record_on_new_three_partition_topic_is_consumed_by_a_group_and_its_commit_reads_back(
    kafka_bootstrap: str,
    topic_factory: Callable[..., str],
    group_id_factory: Callable[..., str],
    kafka_consumer_config: dict[str, Any],
) -> None:
    # Given a new topic with three partitions and one record on it
    topic = topic_factory("localstack", partitions=3)
    group = group_id_factory()
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    sent = producer.send(topic, key=b"k", value=b"hello").get(timeout=10)
    producer.close()

    # When a group consumer reads it and commits by hand
    consumer = KafkaConsumer(topic, group_id=group, **kafka_consumer_config)
    record = _consume_one(consumer)
    assert consumer.partitions_for_topic(topic) == {0, 1, 2}
    tp = TopicPartition(topic, record.partition)
    consumer.commit()
    consumer.close()

    # I expect the record back, and the committed offset readable by a new member of the group
    assert (record.value, record.partition, record.offset) == (b"hello", sent.partition, sent.offset)
    reader = KafkaConsumer(group_id=group, **kafka_consumer_config)
    try:
        assert reader.committed(tp) == record.offset + 1
    finally:
        reader.close()


def test_creating_an_existing_topic_again_is_not_an_error(
    kafka_bootstrap: str, topic_factory: Callable[..., str]
) -> None:
    topic = topic_factory("localstack", partitions=2)

    create_topics(kafka_bootstrap, [topic], partitions=2)

    consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap)
    try:
        assert consumer.partitions_for_topic(topic) == {0, 1}
    finally:
        consumer.close()


# ---------------------------------------------------------------------------------------------------
# S3
# ---------------------------------------------------------------------------------------------------


def test_s3_object_put_is_read_back(s3_endpoint: S3Service, bucket_factory: Callable[..., str]) -> None:
    bucket = bucket_factory()
    client = s3_endpoint.client()
    body = os.urandom(300_000)

    client.put_object(Bucket=bucket, Key="photos/a.jpg", Body=body)

    assert client.get_object(Bucket=bucket, Key="photos/a.jpg")["Body"].read() == body
    ranged = client.get_object(Bucket=bucket, Key="photos/a.jpg", Range="bytes=0-9")
    assert (ranged["ResponseMetadata"]["HTTPStatusCode"], ranged["Body"].read()) == (206, body[:10])


@pytest.mark.parametrize(
    ("credentials", "expected_code"),
    [
        (lambda s3: (s3.access_key, s3.secret_key + "x"), "SignatureDoesNotMatch"),
        (lambda s3: ("AKNOSUCHKEY0000000000", s3.secret_key), "InvalidAccessKeyId"),
    ],
    ids=["wrong-secret", "unknown-key"],
)
def test_wrong_credentials_are_refused_with_403(
    s3_endpoint: S3Service,
    bucket_factory: Callable[..., str],
    credentials: Callable[[S3Service], tuple[str, str]],
    expected_code: str,
) -> None:
    bucket = bucket_factory()
    s3_endpoint.client().put_object(Bucket=bucket, Key="k", Body=b"secret")
    access_key, secret_key = credentials(s3_endpoint)
    intruder = s3_client(s3_endpoint.endpoint_url, access_key, secret_key, s3_endpoint.region, max_attempts=1)

    with pytest.raises(ClientError) as refused:
        intruder.get_object(Bucket=bucket, Key="k")

    error = refused.value.response
    assert (error["ResponseMetadata"]["HTTPStatusCode"], error["Error"]["Code"]) == (403, expected_code)


def test_anonymous_request_gets_403_access_denied(
    s3_endpoint: S3Service, bucket_factory: Callable[..., str]
) -> None:
    bucket = bucket_factory()
    s3_endpoint.client().put_object(Bucket=bucket, Key="k", Body=b"secret")
    anonymous = boto3.client(
        "s3",
        endpoint_url=s3_endpoint.endpoint_url,
        region_name=s3_endpoint.region,
        config=Config(signature_version=UNSIGNED, retries={"max_attempts": 1}),
    )

    with pytest.raises(ClientError) as refused:
        anonymous.get_object(Bucket=bucket, Key="k")

    error = refused.value.response
    assert (error["ResponseMetadata"]["HTTPStatusCode"], error["Error"]["Code"]) == (403, "AccessDenied")


def test_denied_bucket_refuses_reads_with_403_access_denied(
    s3_endpoint: S3Service, denied_bucket: str
) -> None:
    with pytest.raises(ClientError) as refused:
        s3_endpoint.client(max_attempts=1).get_object(Bucket=denied_bucket, Key="secret.png")

    error = refused.value.response
    assert (error["ResponseMetadata"]["HTTPStatusCode"], error["Error"]["Code"]) == (403, "AccessDenied")


@pytest.mark.slow
def test_objects_survive_stop_and_kill_of_seaweedfs_on_the_same_dir_and_port(
    s3_server: SeaweedS3, bucket_factory: Callable[..., str]
) -> None:
    # Given an object stored, and a client configured before the outage
    bucket = bucket_factory()
    client = s3_server.endpoint.client(max_attempts=1)
    client.put_object(Bucket=bucket, Key="kept", Body=b"still here")
    endpoint_before = s3_server.endpoint

    for take_away in (s3_server.stop, s3_server.kill):
        # When S3 goes away (clean stop, then a crash) and comes back
        take_away()
        with pytest.raises(EndpointConnectionError):
            client.get_object(Bucket=bucket, Key="kept")
        s3_server.start()

        # I expect the same endpoint, the same credentials and the object intact
        assert s3_server.endpoint == endpoint_before
        assert client.get_object(Bucket=bucket, Key="kept")["Body"].read() == b"still here"


# ---------------------------------------------------------------------------------------------------
# Processes, ports, listeners
# ---------------------------------------------------------------------------------------------------


def _all_ports(service: TansuBroker | SeaweedS3) -> list[int]:
    return [service.port + offset for offset in service.port_offsets]


@pytest.mark.slow
def test_stop_ends_both_processes_frees_their_ports_and_leaves_no_sockets(tmp_path: Path) -> None:
    # Given the demo's stack, started and answering
    with LocalStack(tmp_path) as stack:
        services = [stack.kafka, stack.s3]
        pids = [service.pid for service in services]
        ports = [port for service in services for port in _all_ports(service)]
        assert all(pid is not None and _pid_alive(pid) for pid in pids)
        # (weed binds its admin ports a moment after S3 answers, so only the served ports are checked)
        assert not any(port_is_free(service.port) for service in services)
        create_topics(stack.bootstrap_servers, ["demo"])
        stack.s3_endpoint.client().list_buckets()

    # I expect, once it has stopped, no process, no port held, and none of weed's /tmp sockets left
    assert [pid for pid in pids if pid is not None and _pid_alive(pid)] == []
    assert [port for port in ports if not port_is_free(port)] == []
    assert [p for port in ports for p in Path("/tmp").glob(f"seaweedfs-*-{port}.sock")] == []
    assert (tmp_path / "kafka" / "tansu.log").stat().st_size > 0
    assert (tmp_path / "s3" / "seaweedfs.log").stat().st_size > 0


def test_services_listen_on_loopback_only(kafka_service: KafkaService, s3_endpoint: S3Service) -> None:
    owned = [service for service in (kafka_service.broker, s3_endpoint.server) if service is not None]
    if not owned:
        pytest.skip("this session owns neither service (external or Docker)")

    for service in owned:
        assert service.pid is not None
        addresses = listening_addresses(service.pid)
        if addresses is None:
            pytest.skip("/proc cannot tell which sockets a process listens on here")
        assert {host for host, _ in addresses} == {"127.0.0.1"}, addresses
        # Its own port block and nothing else (no WebDAV, Iceberg or Lance defaults on fixed ports)
        ports = {port for _, port in addresses}
        assert service.port in ports and ports <= set(_all_ports(service)), addresses


def test_taken_port_fails_fast_with_the_brokers_output_and_leaves_no_process(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        broker = TansuBroker(tmp_path, port=port, start_timeout_s=10)

        started = time.monotonic()
        with pytest.raises(LocalStackError, match="taken"):
            broker.start()

    assert time.monotonic() - started < 5
    assert broker.pid is None
    assert _pids_running(f"tcp://127.0.0.1:{port}") == []


def test_start_retries_on_fresh_ports_when_its_first_choice_is_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a port that another process takes between our choice and the broker's bind
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        choices = iter([taken])
        real_free_port = localstack.free_port
        # Where the services look it up: the first choice is the squatted port.
        monkeypatch.setattr(
            localstack.service, "free_port", lambda offsets: next(choices, None) or real_free_port(offsets)
        )

        # When the broker starts, I expect it up on another port, and no broker left on the taken one
        with TansuBroker(tmp_path) as broker:
            assert broker.port != taken
            create_topics(broker.bootstrap_servers, ["retry"])
        assert _pids_running(f"tcp://127.0.0.1:{taken}") == []
