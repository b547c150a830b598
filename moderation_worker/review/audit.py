"""The audit log: every claim, release, decision, escalation, user change and login, append-only.

Rows are only ever inserted here; the migration installs triggers that refuse UPDATE and DELETE on
the table (SQLite and PostgreSQL), so nothing in the console, nor a mistaken query, can rewrite it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from moderation_worker.review.models import AuditEntry, utcnow


def record(
    session: Session,
    *,
    actor: str,
    action: str,
    item_id: int | None = None,
    target: str | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> None:
    session.add(
        AuditEntry(
            at=at or utcnow(),
            actor=actor,
            action=action,
            item_id=item_id,
            target=target,
            before=before,
            after=after,
        )
    )


def entries(
    session: Session, *, limit: int = 200, before_id: int | None = None, item_id: int | None = None
) -> list[AuditEntry]:
    """Newest first, a page at a time."""
    query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
    if before_id is not None:
        query = query.where(AuditEntry.id < before_id)
    if item_id is not None:
        query = query.where(AuditEntry.item_id == item_id)
    return list(session.scalars(query))


def as_dict(entry: AuditEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "at": entry.at.isoformat(),
        "actor": entry.actor,
        "action": entry.action,
        "item_id": entry.item_id,
        "target": entry.target,
        "before": entry.before,
        "after": entry.after,
    }


def export_jsonl(session: Session, *, batch: int = 1000) -> Iterator[str]:
    """Every entry, oldest first, one JSON object per line (streamed in batches)."""
    last = 0
    while True:
        rows = list(
            session.scalars(
                select(AuditEntry).where(AuditEntry.id > last).order_by(AuditEntry.id).limit(batch)
            )
        )
        if not rows:
            return
        for row in rows:
            yield json.dumps(as_dict(row), ensure_ascii=False) + "\n"
        last = rows[-1].id
