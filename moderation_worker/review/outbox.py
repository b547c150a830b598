"""The outbox publisher: decisions to Kafka, at least once, whatever the broker does meanwhile.

A decision and its outbox row commit together (``decisions.decide``); this loop sends unsent rows and
marks them sent only after the broker acknowledged them (``acks=all``, idempotent producer). A
console whose broker is down keeps taking decisions (they wait here), and a restart sends what was
left. Several replicas can run it: a row is claimed for a short lease before it is sent (``SKIP
LOCKED`` on PostgreSQL, one ``UPDATE ... RETURNING`` on SQLite), so two replicas do not send the same
rows at once; a crash between the send and the mark sends a row twice, which ``decision_id`` lets
downstream recognise.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import structlog
from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from moderation_worker.review.models import Outbox, utcnow
from moderation_worker.review.store import transaction

log = structlog.get_logger(__name__)

CLAIM_S = 60.0  # a claimed row is not sent by another replica for this long


@dataclass(frozen=True)
class PendingRow:
    id: int
    topic: str
    key: bytes | None
    value: bytes
    headers: list


def claim_unsent(session: Session, *, limit: int, claim_s: float = CLAIM_S) -> list[PendingRow]:
    """Claim up to ``limit`` unsent rows (oldest first) for this publisher."""
    now = utcnow()
    claimable = select(Outbox.id).where(
        Outbox.sent_at.is_(None), or_(Outbox.claimed_until.is_(None), Outbox.claimed_until < now)
    )
    claimable = claimable.order_by(Outbox.id).limit(limit)
    if session.get_bind().dialect.name == "postgresql":
        claimable = claimable.with_for_update(skip_locked=True)
    ids = list(session.scalars(claimable))
    if not ids:
        return []
    session.execute(
        update(Outbox).where(Outbox.id.in_(ids)).values(claimed_until=now + timedelta(seconds=claim_s))
    )
    rows = session.scalars(select(Outbox).where(Outbox.id.in_(ids)).order_by(Outbox.id))
    return [PendingRow(r.id, r.topic, r.key, r.value, r.headers) for r in rows]


def mark_sent(session: Session, ids: list[int]) -> None:
    session.execute(
        update(Outbox)
        .where(Outbox.id.in_(ids), Outbox.sent_at.is_(None))
        .values(sent_at=utcnow(), claimed_until=None)
    )


def mark_failed(session: Session, ids: list[int], error: str) -> None:
    session.execute(
        update(Outbox)
        .where(Outbox.id.in_(ids))
        .values(attempts=Outbox.attempts + 1, last_error=error[:2000], claimed_until=None)
    )


def backlog(session: Session) -> int:
    return session.scalar(select(func.count()).where(Outbox.sent_at.is_(None))) or 0


class OutboxPublisher:
    """Sends the outbox from a thread of its own. ``producer_factory`` builds a KafkaProducer when
    one is needed (and again after a failure), so a console starts and decides with the broker down."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        producer_factory: Callable[[], object],
        *,
        interval_s: float = 1.0,
        batch: int = 100,
        delivery_timeout_s: float = 30.0,
    ) -> None:
        self._sessions = sessions
        self._producer_factory = producer_factory
        self._producer = None
        self._interval_s = interval_s
        self._batch = batch
        self._delivery_timeout_s = delivery_timeout_s
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.broker_ok: bool | None = None  # unknown until the first attempt
        self.sent = 0

    def start(self) -> OutboxPublisher:
        self._thread = threading.Thread(target=self._run, name="outbox-publisher", daemon=True)
        self._thread.start()
        return self

    def wake(self) -> None:
        """A decision was committed: send now rather than at the next interval."""
        self._wake.set()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)
        self._close_producer()

    def publish_once(self) -> int:
        """Send one batch of unsent rows; how many were acknowledged (0 when the broker failed)."""
        with transaction(self._sessions) as session:
            rows = claim_unsent(session, limit=self._batch)
        if not rows:
            return 0
        try:
            producer = self._producer or self._connect()
            futures = [
                producer.send(
                    row.topic,
                    key=row.key,
                    value=row.value,
                    headers=[(str(k), str(v).encode()) for k, v in row.headers],
                )
                for row in rows
            ]
            producer.flush(timeout=self._delivery_timeout_s)
            for future in futures:
                future.get(timeout=0)
        except Exception as exc:
            self.broker_ok = False
            log.warning("outbox_publish_failed", rows=len(rows), error=repr(exc))
            self._close_producer()
            with transaction(self._sessions) as session:
                mark_failed(session, [row.id for row in rows], repr(exc))
            return 0
        with transaction(self._sessions) as session:
            mark_sent(session, [row.id for row in rows])
        self.broker_ok = True
        self.sent += len(rows)
        return len(rows)

    def _connect(self):
        self._producer = self._producer_factory()
        return self._producer

    def _close_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.close(timeout=5)
            except Exception:
                log.debug("closing the outbox producer failed", exc_info=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                while self.publish_once() and not self._stop.is_set():
                    pass  # a full batch may mean more: keep going
            except Exception as exc:  # the database failing: try again later, never die
                log.warning("outbox_database_failed", error=repr(exc))
            self._wake.wait(self._interval_s if self.broker_ok is not False else max(self._interval_s, 2.0))
            self._wake.clear()
