"""The console's tables (SQLAlchemy 2, the same on SQLite and PostgreSQL). Alembic migrations create them.

- ``verdicts``: every verdict ingested, once per ``event_id``; the history of a content and an image.
- ``items``: the queue. At most one *open* item per content (a partial unique index), which every
  newer verdict of that content attaches to; ``claimed_by`` and ``lease_until`` are its claim.
- ``item_policies``: the policies an item's verdicts triggered, for the policy filter.
- ``decisions``, ``labels``: what moderators decided, and the per-policy labels it implies.
- ``outbox``: decisions waiting for the broker's acknowledgement (committed with their decision).
- ``audit``: append-only (a trigger refuses UPDATE and DELETE on both databases).
- ``users``, ``sessions``, ``login_attempts``: local accounts, server-side sessions, the login limit.
- ``ingest_rejects``: records of the review topics that are not verdicts: kept, never dropped.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

Json = JSON().with_variant(JSONB(), "postgresql")

# Queue order: block before review before allow (the sample queue), then severity, then age.
DECISION_RANK = {"allow": 0, "review": 1, "block": 2}
SEVERITY_RANK = {"low": 0, "medium": 1, "high": 2, "critical": 3}
QUEUES = ("default", "escalated", "sample")
ROLES = ("moderator", "lead", "admin")


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes in and out, on SQLite (which stores no zone) as on PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are refused: pass an aware UTC datetime")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: Json, list[Any]: Json, datetime: UTCDateTime}  # noqa: RUF012


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str | None] = mapped_column(String(256))  # None: proxy-authenticated only
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Session(Base):
    __tablename__ = "sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 of the cookie value
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]


class LoginAttempt(Base):
    __tablename__ = "login_attempts"
    __table_args__ = (Index("ix_login_attempts_lookup", "username", "address", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(128))
    address: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    ok: Mapped[bool] = mapped_column(Boolean)


class Verdict(Base):
    __tablename__ = "verdicts"
    __table_args__ = (Index("ix_verdicts_content", "content_key"), Index("ix_verdicts_sha256", "sha256"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_id: Mapped[str] = mapped_column(String(256), unique=True)
    content_key: Mapped[str] = mapped_column(String(600))
    tenant: Mapped[str | None] = mapped_column(String(256))
    content_id: Mapped[str | None] = mapped_column(String(256))
    sha256: Mapped[str] = mapped_column(String(64))
    image_url: Mapped[str] = mapped_column(String(2048))
    decision: Mapped[str] = mapped_column(String(16))
    record_key: Mapped[bytes | None] = mapped_column(
        LargeBinary
    )  # the verdict's Kafka key: decisions reuse it
    source: Mapped[str] = mapped_column(String(16))  # "review" (flagged) or "sample" (an allow, sampled)
    body: Mapped[dict[str, Any]]  # the whole verdict as published
    item_id: Mapped[int | None] = mapped_column(ForeignKey("items.id"), index=True)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)


class Item(Base):
    __tablename__ = "items"
    __table_args__ = (
        # One open item per content; decided items keep their history.
        Index(
            "uq_items_open_content",
            "content_key",
            unique=True,
            sqlite_where=text("status = 'open'"),
            postgresql_where=text("status = 'open'"),
        ),
        # In claim order, so taking the next item reads the first entry instead of sorting the queue.
        Index(
            "ix_items_next",
            "status",
            "queue",
            text("decision_rank DESC"),
            text("severity_rank DESC"),
            "created_at",
            "id",
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    queue: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="open")  # open | decided
    content_key: Mapped[str] = mapped_column(String(600))
    tenant: Mapped[str | None] = mapped_column(String(256))
    content_id: Mapped[str | None] = mapped_column(String(256))
    sha256: Mapped[str] = mapped_column(String(64))
    latest_verdict_id: Mapped[int | None] = mapped_column(Integer)
    decision: Mapped[str] = mapped_column(String(16))  # the strictest decision among its verdicts
    decision_rank: Mapped[int] = mapped_column(Integer)
    severity: Mapped[str] = mapped_column(String(16))  # the highest severity among triggered policies
    severity_rank: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    claimed_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    lease_until: Mapped[datetime | None]
    outcome: Mapped[str | None] = mapped_column(String(16))  # removed | allowed, once decided
    decided_at: Mapped[datetime | None]


class ItemPolicy(Base):
    __tablename__ = "item_policies"

    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), primary_key=True)
    policy_id: Mapped[str] = mapped_column(String(64), primary_key=True, index=True)


class Decision(Base):
    __tablename__ = "decisions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    decision_id: Mapped[str] = mapped_column(String(36), unique=True)  # the idempotency key downstream
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"), index=True)
    verdict_id: Mapped[int] = mapped_column(ForeignKey("verdicts.id"))
    action: Mapped[str] = mapped_column(String(16))  # uphold | overturn | escalate
    reason: Mapped[str | None] = mapped_column(Text)
    moderator_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    decided_at: Mapped[datetime] = mapped_column(default=utcnow)


class Label(Base):
    __tablename__ = "labels"
    __table_args__ = (Index("ix_labels_policy", "policy_id", "decided_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    decision_id: Mapped[int] = mapped_column(ForeignKey("decisions.id"), index=True)
    policy_id: Mapped[str] = mapped_column(String(64))
    label: Mapped[bool] = mapped_column(Boolean)  # True: the policy applies to the image
    explicit: Mapped[bool] = mapped_column(Boolean)  # marked by the moderator, not implied by the action
    score: Mapped[float | None] = mapped_column(Float)  # None: a policy the model missed, unscored
    confidence: Mapped[float | None] = mapped_column(Float)
    threshold: Mapped[float | None] = mapped_column(Float)
    sha256: Mapped[str] = mapped_column(String(64))
    image_url: Mapped[str] = mapped_column(String(2048))
    moderator: Mapped[str] = mapped_column(String(128))
    decided_at: Mapped[datetime] = mapped_column(default=utcnow)
    pack: Mapped[dict[str, Any]]
    model: Mapped[dict[str, Any]]


class Outbox(Base):
    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_unsent", "sent_at", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    topic: Mapped[str] = mapped_column(String(256))
    key: Mapped[bytes | None] = mapped_column(LargeBinary)
    value: Mapped[bytes] = mapped_column(LargeBinary)
    headers: Mapped[list[Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None]
    claimed_until: Mapped[datetime | None]  # a publisher is sending it (no other replica takes it)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)


class AuditEntry(Base):
    __tablename__ = "audit"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(32))
    item_id: Mapped[int | None] = mapped_column(Integer, index=True)
    target: Mapped[str | None] = mapped_column(String(256))  # a user name, for user changes
    before: Mapped[dict[str, Any] | None] = mapped_column(Json)
    after: Mapped[dict[str, Any] | None] = mapped_column(Json)


class IngestReject(Base):
    __tablename__ = "ingest_rejects"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    topic: Mapped[str] = mapped_column(String(256))
    partition: Mapped[int] = mapped_column(Integer)
    offset: Mapped[int] = mapped_column(BigInteger)
    error: Mapped[str] = mapped_column(Text)
    value: Mapped[bytes | None] = mapped_column(LargeBinary)  # the record, up to 64 KiB
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
