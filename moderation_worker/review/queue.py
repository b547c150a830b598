"""The queue: what is waiting, and claims on it. Two moderators never hold the same item.

A claim is a lease: ``claimed_by`` and ``lease_until`` on the item, renewed while its page is open,
released on a decision or a skip; an expired lease makes the item claimable again. Taking the next
item is one statement the database serialises, never a read-then-write:
- PostgreSQL: ``SELECT ... FOR UPDATE SKIP LOCKED`` picks the first unclaimed item no other
  transaction holds, then the same transaction claims it;
- SQLite: one ``UPDATE ... WHERE id = (SELECT ... LIMIT 1) RETURNING id``, under the database's
  single write lock (``BEGIN IMMEDIATE``).
Order: block before review (before the sample's allows), then severity, then age; an index in that
order (``ix_items_next``) makes the next item the first entry read, not a sort of the queue.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import and_, exists, func, or_, select, update
from sqlalchemy.orm import Session

from moderation_worker.review.audit import record
from moderation_worker.review.models import (
    DECISION_RANK,
    QUEUES,
    SEVERITY_RANK,
    Item,
    ItemPolicy,
    User,
    utcnow,
)

AGE_BUCKETS = (("under_1h", timedelta(hours=1)), ("under_24h", timedelta(hours=24)), ("older", None))


@dataclass(frozen=True)
class Filters:
    tenant: str | None = None
    policy: str | None = None
    decision: str | None = None
    severity: str | None = None

    def conditions(self) -> list:
        where = []
        if self.tenant:
            where.append(Item.tenant == self.tenant)
        if self.decision in DECISION_RANK:
            where.append(Item.decision == self.decision)
        if self.severity in SEVERITY_RANK:
            where.append(Item.severity == self.severity)
        if self.policy:
            where.append(
                exists().where(and_(ItemPolicy.item_id == Item.id, ItemPolicy.policy_id == self.policy))
            )
        return where


@dataclass
class QueueStats:
    counts: dict[str, int] = field(default_factory=dict)  # open items per queue
    by_age: dict[str, dict[str, int]] = field(default_factory=dict)  # queue -> age bucket -> count
    oldest_s: dict[str, float | None] = field(default_factory=dict)  # queue -> age of its oldest item
    claimed: int = 0


def _claimable(queue: str, now: datetime):
    return and_(
        Item.status == "open",
        Item.queue == queue,
        or_(Item.claimed_by.is_(None), Item.lease_until < now),
    )


def _in_order(query):
    return query.order_by(Item.decision_rank.desc(), Item.severity_rank.desc(), Item.created_at, Item.id)


def claim_next(
    session: Session,
    user: User,
    *,
    queue: str = "default",
    filters: Filters | None = None,
    lease_s: float,
    now: datetime | None = None,
) -> Item | None:
    """Claim the first claimable item of ``queue`` matching ``filters`` for ``user``; None if none."""
    if queue not in QUEUES:
        raise ValueError(f"unknown queue {queue!r}")
    now = now or utcnow()
    until = now + timedelta(seconds=lease_s)
    conditions = (filters or Filters()).conditions()
    first = _in_order(select(Item.id).where(_claimable(queue, now), *conditions)).limit(1)
    if session.get_bind().dialect.name == "postgresql":
        first = first.with_for_update(skip_locked=True)  # rows other claimers hold are passed over
    # One statement, one round trip: pick and claim together (on SQLite under its one write lock).
    item = session.scalars(
        update(Item)
        .where(Item.id == first.scalar_subquery())
        .values(claimed_by=user.id, lease_until=until)
        .returning(Item),
        execution_options={"synchronize_session": False, "populate_existing": True},
    ).first()
    if item is None:
        return None
    record(
        session, actor=user.name, action="claim", item_id=item.id, after={"lease_until": until.isoformat()}
    )
    return item


def renew(session: Session, item_id: int, user: User, *, lease_s: float, now: datetime | None = None) -> bool:
    """Extend the user's claim; False when the claim is no longer theirs (expired and taken, released)."""
    now = now or utcnow()
    changed = session.execute(
        update(Item)
        .where(Item.id == item_id, Item.claimed_by == user.id, Item.status == "open")
        .values(lease_until=now + timedelta(seconds=lease_s))
    )
    return changed.rowcount == 1


def holds(item: Item, user: User, now: datetime | None = None) -> bool:
    now = now or utcnow()
    return item.claimed_by == user.id and item.lease_until is not None and item.lease_until >= now


def release(session: Session, item: Item, *, actor: User, reason: str) -> None:
    """Give the claim up (a skip, a lead's release): the item is back in its queue."""
    before = {"claimed_by": item.claimed_by}
    item.claimed_by, item.lease_until = None, None
    record(
        session, actor=actor.name, action="release", item_id=item.id, before=before, after={"reason": reason}
    )


def reassign(session: Session, item: Item, to: User, *, actor: User, lease_s: float) -> None:
    before = {"claimed_by": item.claimed_by}
    item.claimed_by, item.lease_until = to.id, utcnow() + timedelta(seconds=lease_s)
    record(
        session,
        actor=actor.name,
        action="reassign",
        item_id=item.id,
        before=before,
        after={"claimed_by": to.id},
    )


def stats(session: Session, now: datetime | None = None) -> QueueStats:
    now = now or utcnow()
    result = QueueStats()
    for queue in QUEUES:
        is_open = and_(Item.status == "open", Item.queue == queue)
        result.counts[queue] = session.scalar(select(func.count()).where(is_open)) or 0
        oldest = session.scalar(select(func.min(Item.created_at)).where(is_open))
        if oldest is not None and oldest.tzinfo is None:
            oldest = oldest.replace(tzinfo=now.tzinfo)
        result.oldest_s[queue] = (now - oldest).total_seconds() if oldest is not None else None
        buckets, newer_than = {}, now
        for name, age in AGE_BUCKETS:
            older_than = now - age if age is not None else None
            where = [is_open, Item.created_at <= newer_than]
            if older_than is not None:
                where.append(Item.created_at > older_than)
            buckets[name] = session.scalar(select(func.count()).where(*where)) or 0
            newer_than = older_than if older_than is not None else newer_than
        result.by_age[queue] = buckets
    result.claimed = (
        session.scalar(
            select(func.count()).where(
                Item.status == "open", Item.claimed_by.is_not(None), Item.lease_until >= now
            )
        )
        or 0
    )
    return result


def waiting(session: Session, *, queue: str, filters: Filters | None = None, limit: int = 50) -> list[Item]:
    """The first items of a queue in claim order (for the overview; claimed ones included)."""
    conditions = (filters or Filters()).conditions()
    query = _in_order(select(Item).where(Item.status == "open", Item.queue == queue, *conditions))
    return list(session.scalars(query.limit(limit)))
