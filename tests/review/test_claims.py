"""Claims, on SQLite and PostgreSQL: many moderators at once, and no item is ever held twice."""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from moderation_worker.review import auth, queue
from moderation_worker.review.ingest import ingest
from moderation_worker.review.models import AuditEntry, Item, User, utcnow
from moderation_worker.review.store import transaction
from tests.review.factories import record, verdict

MODERATORS = 20


def _fill(sessions, n: int) -> None:
    records = [
        record(verdict(f"e{i}", content_id=f"c{i}", triggered={"weapons": 0.9}), offset=i) for i in range(n)
    ]
    with transaction(sessions) as session:
        ingest(session, records, sample_rate=0)


def _moderators(sessions, n: int = MODERATORS) -> list[User]:
    with transaction(sessions) as session:
        return [auth.add_user(session, f"m{i}", "moderator", None, actor="test") for i in range(n)]


def _real_claim(sessions, user: User) -> int | None:
    with transaction(sessions) as session:
        item = queue.claim_next(session, user, lease_s=600)
        return item.id if item else None


def _read_then_write(sessions, user: User) -> int | None:
    """The claim done wrong: read the first unclaimed item, then claim it in a second step."""
    with transaction(sessions) as session:
        item_id = session.scalar(
            select(Item.id).where(Item.status == "open", Item.claimed_by.is_(None)).order_by(Item.id).limit(1)
        )
    if item_id is None:
        return None
    time.sleep(0.002)  # the moment another moderator reads the same row
    with transaction(sessions) as session:
        session.execute(
            update(Item).where(Item.id == item_id).values(claimed_by=user.id, lease_until=utcnow())
        )
    return item_id


def _claim_concurrently(sessions, users: list[User], claim) -> list[int]:
    claimed: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(len(users))
    errors: list[BaseException] = []

    def moderator(user: User) -> None:
        start.wait()
        try:
            while (item_id := claim(sessions, user)) is not None:
                with lock:
                    claimed.append(item_id)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=moderator, args=(user,)) for user in users]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert errors == []
    return claimed


def test_concurrent_moderators_never_hold_the_same_item(sessions):
    # Given 300 items and 20 moderators taking the next item as fast as they can
    _fill(sessions, 300)
    users = _moderators(sessions)

    claimed = _claim_concurrently(sessions, users, _real_claim)

    # I expect every item claimed exactly once
    counts = Counter(claimed)
    assert len(claimed) == 300 and max(counts.values()) == 1
    with transaction(sessions) as session:
        assert session.scalar(select(Item.id).where(Item.claimed_by.is_(None))) is None


def test_the_concurrency_test_catches_a_read_then_write_claim(sessions):
    # The same scenario with the claim done wrong: the test above would fail on it
    _fill(sessions, 60)
    users = _moderators(sessions)
    claimed = _claim_concurrently(sessions, users, _read_then_write)
    assert max(Counter(claimed).values()) > 1


def test_items_come_in_order_block_then_severity_then_age(sessions):
    with transaction(sessions) as session:
        ingest(
            session,
            [
                record(verdict("old-review-medium", content_id="a", triggered={"weapons": 0.9})),
                record(verdict("review-high", content_id="b", triggered={"graphic_violence": 0.9})),
                record(verdict("block", content_id="c", triggered={"hate_symbols": 0.9})),
                record(verdict("new-review-medium", content_id="d", triggered={"drugs": 0.9})),
            ],
            sample_rate=0,
        )
    [user] = _moderators(sessions, 1)
    order = []
    while (item_id := _real_claim(sessions, user)) is not None:
        with transaction(sessions) as session:
            order.append(session.get(Item, item_id).content_id)
    assert order == ["c", "b", "a", "d"]


def test_filters_narrow_what_is_handed_out(sessions):
    with transaction(sessions) as session:
        ingest(
            session,
            [
                record(verdict("w", content_id="w", tenant="shop", triggered={"weapons": 0.9})),
                record(verdict("d", content_id="d", tenant="blog", triggered={"drugs": 0.9})),
            ],
            sample_rate=0,
        )
    [user] = _moderators(sessions, 1)
    with transaction(sessions) as session:
        assert (
            queue.claim_next(session, user, filters=queue.Filters(policy="drugs"), lease_s=60).content_id
            == "d"
        )
        assert queue.claim_next(session, user, filters=queue.Filters(tenant="nope"), lease_s=60) is None
        assert (
            queue.claim_next(session, user, filters=queue.Filters(tenant="shop"), lease_s=60).content_id
            == "w"
        )


def test_an_expired_lease_returns_the_item_and_renewal_keeps_it(sessions):
    _fill(sessions, 1)
    alice, bob = _moderators(sessions, 2)
    now = utcnow()
    with transaction(sessions) as session:
        item = queue.claim_next(session, alice, lease_s=60, now=now)
        assert queue.claim_next(session, bob, lease_s=60, now=now + timedelta(seconds=30)) is None
        assert queue.renew(session, item.id, alice, lease_s=60, now=now + timedelta(seconds=50))
        # renewed to now + 110 s: still hers at 100 s
        assert queue.claim_next(session, bob, lease_s=60, now=now + timedelta(seconds=100)) is None
        taken = queue.claim_next(session, bob, lease_s=60, now=now + timedelta(seconds=200))
        assert taken is not None and taken.id == item.id and taken.claimed_by == bob.id
        assert not queue.renew(session, item.id, alice, lease_s=60)  # hers no longer
        claims = session.scalars(select(AuditEntry.actor).where(AuditEntry.action == "claim")).all()
        assert claims == ["m0", "m1"]


@pytest.mark.parametrize("queue_name", ["nope"])
def test_an_unknown_queue_is_a_programming_error(sessions, queue_name):
    [user] = _moderators(sessions, 1)
    with pytest.raises(ValueError), transaction(sessions) as session:
        queue.claim_next(session, user, queue=queue_name, lease_s=60)
