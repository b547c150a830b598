"""``moderation-worker topics ensure`` against the real broker: creates what is missing, is idempotent,
and fails with exit 1 (not a traceback) when the broker cannot be reached."""

from __future__ import annotations

import uuid

from kafka import KafkaConsumer

from moderation_worker.cli import main
from moderation_worker.config import Settings
from moderation_worker.localstack import free_port
from moderation_worker.topics import default_topics, ensure_topics


def _partitions(bootstrap: str, topic: str) -> set[int] | None:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        return consumer.partitions_for_topic(topic)
    finally:
        consumer.close()


def test_ensure_creates_the_missing_topics_once_with_their_partitions(kafka_bootstrap):
    settings = Settings(kafka_bootstrap_servers=kafka_bootstrap)
    names = [f"ensure-{uuid.uuid4().hex[:10]}-{n}" for n in range(2)]

    first = ensure_topics(settings, names, partitions=3, replication_factor=1, retention_ms=3_600_000)
    assert [(o.name, o.created) for o in first] == [(names[0], True), (names[1], True)]
    assert _partitions(kafka_bootstrap, names[0]) == {0, 1, 2}

    # Idempotent: a second run (another instance booting) changes nothing and succeeds.
    second = ensure_topics(settings, names, partitions=5, replication_factor=1)
    assert [(o.name, o.created) for o in second] == [(names[0], False), (names[1], False)]
    assert _partitions(kafka_bootstrap, names[1]) == {0, 1, 2}


def test_the_command_defaults_to_the_four_configured_topics(kafka_bootstrap, capsys, monkeypatch):
    suffix = uuid.uuid4().hex[:10]
    for variable in ("INPUT", "RESULTS", "DLQ", "REVIEW"):
        monkeypatch.setenv(f"MODERATION_{variable}_TOPIC", f"{variable.lower()}-{suffix}")
    monkeypatch.setenv("MODERATION_KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    expected = default_topics(Settings())
    assert len(set(expected)) == 4

    assert main(["topics", "ensure", "--partitions", "2", "--replication-factor", "1"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed == [f"{name}: created" for name in expected]
    assert all(_partitions(kafka_bootstrap, name) == {0, 1} for name in expected)


def test_an_unreachable_broker_is_exit_1_with_a_message(capsys):
    port = free_port()
    code = main(
        [
            "topics", "ensure", "somewhere", "--replication-factor", "1", "--timeout-s", "2",
            "--kafka-bootstrap-servers", f"127.0.0.1:{port}", "--kafka-bootstrap-timeout-s", "2",
        ]
    )  # fmt: skip
    assert code == 1
    assert "error:" in capsys.readouterr().err
