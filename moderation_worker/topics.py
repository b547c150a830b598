"""``moderation-worker topics ensure``: create the worker's topics where the broker does not.

Production clusters (MSK among them) run with topic auto-creation off, so a fresh deployment has no
topic to consume and nowhere to publish. This is the bootstrap job: idempotent (a topic that already
exists is left exactly as it is, partitions and configuration included), run before the worker
starts, with the worker's own connection settings (TLS, SASL or AWS IAM).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import structlog
from kafka import KafkaAdminClient
from kafka.errors import KafkaError, TopicAlreadyExistsError, for_code

from moderation_worker.config import Settings

log = structlog.get_logger(__name__)

_TOPIC_ALREADY_EXISTS = TopicAlreadyExistsError.errno


@dataclass(frozen=True, slots=True)
class TopicOutcome:
    name: str
    created: bool


def default_topics(settings: Settings) -> list[str]:
    """The four topics the worker reads and writes."""
    return [settings.input_topic, settings.results_topic, settings.dlq_topic, settings.review_topic]


def ensure_topics(
    settings: Settings,
    names: Sequence[str],
    *,
    partitions: int,
    replication_factor: int,
    retention_ms: int | None = None,
    timeout_s: float = 30.0,
) -> list[TopicOutcome]:
    """Create each topic that does not exist; KafkaError for anything but "already exists"."""
    admin = KafkaAdminClient(**settings.kafka_common(), request_timeout_ms=int(timeout_s * 1000))
    try:
        return create_missing(
            admin, names, partitions=partitions, replication_factor=replication_factor,
            retention_ms=retention_ms, timeout_s=timeout_s,
        )  # fmt: skip
    finally:
        admin.close()


def create_missing(
    admin: KafkaAdminClient,
    names: Sequence[str],
    *,
    partitions: int,
    replication_factor: int,
    retention_ms: int | None = None,
    timeout_s: float = 30.0,
) -> list[TopicOutcome]:
    """The topics created (or found) through ``admin``, in the order named, once every partition has a
    leader: a created topic is not produceable until then (real Kafka elects leaders asynchronously)."""
    wanted = list(dict.fromkeys(names))
    if not wanted:
        return []
    spec: dict[str, object] = {"num_partitions": partitions, "replication_factor": replication_factor}
    if retention_ms is not None:
        spec["topic_configs"] = {"retention.ms": str(retention_ms)}
    response = admin.create_topics({name: spec for name in wanted}, raise_errors=False)
    outcomes = []
    for topic in response["topics"]:
        code = topic["error_code"]
        if code not in (0, _TOPIC_ALREADY_EXISTS):
            raise for_code(code)(f"create topic {topic['name']!r}: {topic['error_message']}")
        outcomes.append(TopicOutcome(topic["name"], created=code == 0))
    admin.wait_for_topics(wanted, timeout_ms=int(timeout_s * 1000))
    order = {name: index for index, name in enumerate(wanted)}
    return sorted(outcomes, key=lambda outcome: order.get(outcome.name, len(order)))


def add_parser(commands, worker_settings: argparse.ArgumentParser) -> None:
    topics = commands.add_parser("topics", help="Kafka topic tools")
    topic_commands = topics.add_subparsers(dest="topics_command", required=True)
    ensure = topic_commands.add_parser(
        "ensure",
        parents=[worker_settings],
        help="create the topics that do not exist (idempotent); exit 1 on any other error",
    )
    ensure.add_argument("names", nargs="*", metavar="TOPIC", help="default: the four configured topics")
    ensure.add_argument("--partitions", type=_positive, default=12, help="partitions of a new topic")
    ensure.add_argument(
        "--replication-factor", type=_positive, default=3, help="replicas of a new topic's partitions"
    )
    ensure.add_argument("--retention-ms", type=_positive, default=None, help="retention.ms of a new topic")
    ensure.add_argument("--timeout-s", type=float, default=30.0, help="how long to wait for the broker")


def run(settings: Settings, args: argparse.Namespace) -> int:
    names = args.names or default_topics(settings)
    try:
        outcomes = ensure_topics(
            settings,
            names,
            partitions=args.partitions,
            replication_factor=args.replication_factor,
            retention_ms=args.retention_ms,
            timeout_s=args.timeout_s,
        )
    except KafkaError as exc:
        log.error("topics_not_ensured", topics=names, error=repr(exc))
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for outcome in outcomes:
        log.info("topic_ensured", topic=outcome.name, created=outcome.created)
        print(f"{outcome.name}: {'created' if outcome.created else 'exists'}")
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value
