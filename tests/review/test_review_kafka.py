"""The console against a real broker: ingestion at least once and stored once, through kills and
redeliveries; decisions reaching moderation.decisions through the outbox while the broker comes and
goes, and across a console restart."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import uuid

import pytest
from kafka import KafkaProducer
from sqlalchemy import func, select

from moderation_worker.config import Settings
from moderation_worker.localstack import TansuBroker, create_topics
from moderation_worker.readback import read_topic
from moderation_worker.review import auth, queue
from moderation_worker.review.decisions import DecisionRequest, decide
from moderation_worker.review.ingester import Ingester, make_review_consumer
from moderation_worker.review.models import Item, Outbox, Verdict
from moderation_worker.review.outbox import OutboxPublisher
from moderation_worker.review.service import decisions_producer
from moderation_worker.review.settings import ReviewSettings
from moderation_worker.review.store import make_engine, migrate, session_factory, transaction
from tests.hostile_s3 import wait_until
from tests.review.factories import PACK, verdict

pytestmark = [pytest.mark.integration]
REPO = __import__("pathlib").Path(__file__).resolve().parents[2]


def _settings(bootstrap: str, review_topic: str, **overrides) -> Settings:
    values = dict(
        kafka_bootstrap_servers=bootstrap,
        review_topic=review_topic,
        results_topic=f"{review_topic}.results",
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
        kafka_bootstrap_timeout_s=5.0,
        delivery_timeout_s=5.0,
    )
    return Settings(**(values | overrides))


def _publish(bootstrap: str, topic: str, results) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        for result in results:
            producer.send(
                topic, key=(result.content_id or result.event_id).encode(), value=result.to_json_bytes()
            )
        producer.flush(timeout=30)
    finally:
        producer.close()


def _sessions(tmp_path, name="console.db"):
    engine = make_engine(f"sqlite:///{tmp_path / name}")
    migrate(engine)
    return session_factory(engine)


def _stored(sessions) -> int:
    with transaction(sessions) as session:
        return session.scalar(select(func.count()).select_from(Verdict))


def test_ingestion_stores_each_verdict_once_whatever_is_redelivered(kafka_bootstrap, topic_factory, tmp_path):
    # Given verdicts on the review topic, some published twice (a worker redoes an uncommitted batch)
    topic = topic_factory("review", partitions=3)
    results = [verdict(f"e{n}", content_id=f"c{n % 7}", triggered={"weapons": 0.9}) for n in range(60)]
    _publish(kafka_bootstrap, topic, results + results[:20])
    sessions = _sessions(tmp_path)
    settings = _settings(kafka_bootstrap, topic)

    # When two ingesters of different groups read everything (each a full redelivery to the same store)
    for group in ("first", "second"):
        review = ReviewSettings(group_id=f"{group}-{uuid.uuid4().hex[:8]}", sample_rate=0)
        ingester = Ingester(consumer=make_review_consumer(settings, review), sessions=sessions,
                            review_topic=topic, results_topic=None, sample_rate=0)  # fmt: skip
        ingester.run(idle_timeout_s=4)

    # I expect each verdict once, and one open item per content
    assert _stored(sessions) == 60
    with transaction(sessions) as session:
        assert session.scalar(select(func.count()).where(Item.status == "open")) == 7


def test_a_sigkilled_ingester_loses_nothing_and_its_successor_stores_nothing_twice(
    kafka_bootstrap, topic_factory, tmp_path
):
    topic = topic_factory("review", partitions=3)
    total = 4000
    results = [verdict(f"k{n}", content_id=f"c{n}", triggered={"drugs": 0.9}) for n in range(total)]
    _publish(kafka_bootstrap, topic, results)
    database = f"sqlite:///{tmp_path / 'console.db'}"
    env = {
        **{k: v for k, v in __import__("os").environ.items() if not k.startswith("MODERATION_")},
        "MODERATION_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "MODERATION_REVIEW_TOPIC": topic,
        "MODERATION_SESSION_TIMEOUT_MS": "6000",
        "MODERATION_HEARTBEAT_INTERVAL_MS": "1000",
        "MODERATION_REVIEW_DATABASE_URL": database,
        "MODERATION_REVIEW_GROUP_ID": f"kill-{uuid.uuid4().hex[:8]}",
        "MODERATION_REVIEW_SAMPLE_RATE": "0",
    }
    sessions = _sessions(tmp_path)  # migrated up front, as `review migrate` would

    def start(log_name: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "moderation_worker", "review", "ingest"], cwd=REPO, env=env,
            stdout=(tmp_path / log_name).open("wb"), stderr=subprocess.STDOUT,
        )  # fmt: skip

    first = start("first.log")
    try:
        stored_some = wait_until(lambda: _stored(sessions) >= 1, timeout_s=60, interval_s=0.005)
        assert stored_some, (tmp_path / "first.log").read_text()[-2000:]
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    assert _stored(sessions) < total, "the first ingester finished before the kill; nothing was proven"

    second = start("second.log")
    try:
        finished = wait_until(lambda: _stored(sessions) >= total, timeout_s=120)
        assert finished, (tmp_path / "second.log").read_text()[-2000:]
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=30) == 0
    with transaction(sessions) as session:
        ids = session.scalars(select(Verdict.event_id)).all()
    assert sorted(ids) == sorted(r.event_id for r in results)


def _decide_all(sessions, n: int) -> list[str]:
    with transaction(sessions) as session:
        from moderation_worker.review.ingest import ingest
        from tests.review.factories import record

        ingest(session, [record(verdict(f"d{i}", content_id=f"c{i}", triggered={"weapons": 0.9}), offset=i)
                         for i in range(n)], sample_rate=0)  # fmt: skip
        moderator = auth.add_user(session, f"mo-{uuid.uuid4().hex[:6]}", "moderator", None, actor="test")
    ids = []
    policies = frozenset(p.id for p in PACK.policies)
    for _ in range(n):
        with transaction(sessions) as session:
            item = queue.claim_next(session, moderator, lease_s=600)
            ids.append(decide(session, item, moderator, DecisionRequest(action="uphold"),
                              decisions_topic=DECISIONS, known_policies=policies).decision_id)  # fmt: skip
    return ids


DECISIONS = "moderation.decisions"


def _published(bootstrap: str) -> set[str]:
    return {
        json.loads(r.value)["decision_id"] for r in read_topic(bootstrap, DECISIONS, idle_s=2.0, timeout_s=30)
    }


def _unsent(sessions) -> int:
    with transaction(sessions) as session:
        return session.scalar(select(func.count()).where(Outbox.sent_at.is_(None)))


def test_decisions_taken_while_the_broker_is_down_reach_the_topic_when_it_returns(tmp_path):
    # Given a console whose own broker goes away
    broker = TansuBroker(tmp_path / "tansu").start()
    port = broker.port
    settings = _settings(broker.bootstrap_servers, "review")
    sessions = _sessions(tmp_path)
    publisher = OutboxPublisher(sessions, lambda: decisions_producer(settings), interval_s=0.2,
                                delivery_timeout_s=3).start()  # fmt: skip
    try:
        broker.stop()

        # When moderators keep deciding meanwhile
        decided = _decide_all(sessions, 5)
        assert wait_until(lambda: publisher.broker_ok is False, timeout_s=30)
        assert _unsent(sessions) == 5

        # and the broker comes back (memory storage: its topics are recreated)
        broker = TansuBroker(tmp_path / "tansu", port=port).start()
        create_topics(broker.bootstrap_servers, [DECISIONS])
        publisher.wake()

        # I expect every decision on the topic, and nothing left unsent
        assert wait_until(lambda: _unsent(sessions) == 0, timeout_s=60)
        assert _published(broker.bootstrap_servers) >= set(decided)
    finally:
        publisher.stop()
        broker.stop()


def test_decisions_left_unsent_by_a_console_that_restarted_are_sent_by_the_next_one(tmp_path):
    broker = TansuBroker(tmp_path / "tansu").start()
    port = broker.port
    settings = _settings(broker.bootstrap_servers, "review")
    sessions = _sessions(tmp_path)
    broker.stop()
    first = OutboxPublisher(
        sessions, lambda: decisions_producer(settings), interval_s=0.2, delivery_timeout_s=3
    )
    first.start()
    decided = _decide_all(sessions, 4)
    assert wait_until(lambda: first.broker_ok is False, timeout_s=30)
    first.stop()  # the console restarts before the broker returns

    broker = TansuBroker(tmp_path / "tansu", port=port).start()
    try:
        create_topics(broker.bootstrap_servers, [DECISIONS])
        second = OutboxPublisher(
            _sessions(tmp_path), lambda: decisions_producer(settings), interval_s=0.2
        ).start()
        try:
            assert wait_until(lambda: _unsent(sessions) == 0, timeout_s=60)
        finally:
            second.stop()
        assert _published(broker.bootstrap_servers) >= set(decided)
    finally:
        broker.stop()
