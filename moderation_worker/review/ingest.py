"""Verdicts into the queue: each stored once, attached to its content's one open item.

The rules, in one place (``ingest``), on records the ingester hands in after polling:
- a verdict is stored once, keyed by ``event_id``: a redelivered verdict changes nothing;
- an item is one *open* item per content: (tenant, content_id), or the image's sha256 when there is
  no content_id. A newer verdict of open content attaches to that item (its decision and severity
  become the strictest of its verdicts'; a flagged verdict moves a sampled item to the default queue);
- a verdict of content already decided is kept in that item's history, and opens a new item only
  when its decision is stricter than the outcome taken (an overturned item whose content is flagged
  again comes back; an upheld removal does not);
- from the results topic, a deterministic share (``sample_rate``) of *allow* verdicts, chosen by
  their event_id so every replica and every redelivery chooses the same, goes to the sample queue;
- a record that is not a verdict is kept in ``ingest_rejects``, never dropped.
The caller commits the transaction, then the offsets.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from moderation_worker.events import Decision as VerdictDecision
from moderation_worker.events import ModerationResult
from moderation_worker.review.models import (
    DECISION_RANK,
    SEVERITY_RANK,
    IngestReject,
    Item,
    ItemPolicy,
    Verdict,
    utcnow,
)

# What a decided item's outcome amounts to, on the scale verdict decisions are ranked on.
OUTCOME_RANK = {"removed": DECISION_RANK["block"], "allowed": DECISION_RANK["allow"]}
MAX_REJECT_BYTES = 64 * 1024


@dataclass(frozen=True)
class IncomingRecord:
    """One record polled from the review topic (``flagged``) or the results topic (``results``)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    kind: str  # "flagged" | "results"


@dataclass
class IngestSummary:
    stored: int = 0
    duplicates: int = 0
    sampled_out: int = 0  # results records that were not sampled (or not allow verdicts)
    rejected: int = 0
    opened: int = 0
    attached: int = 0
    history_only: int = 0
    errors: list[str] = field(default_factory=list)


def content_key(tenant: str | None, content_id: str | None, sha256: str) -> str:
    if content_id is not None:
        return f"content:{len(tenant or '')}:{tenant or ''}:{content_id}"  # length-prefixed: unambiguous
    return f"sha256:{sha256}"


def is_sampled(event_id: str, rate: float) -> bool:
    """Deterministic: the same event is sampled (or not) by every replica, on every redelivery."""
    if rate <= 0:
        return False
    bucket = int.from_bytes(hashlib.sha256(event_id.encode()).digest()[:8], "big") / 2**64
    return bucket < rate


def ingest(session: Session, records: Iterable[IncomingRecord], *, sample_rate: float) -> IngestSummary:
    summary = IngestSummary()
    for record in records:
        try:
            result = ModerationResult.model_validate_json(record.value or b"")
        except (ValidationError, ValueError) as exc:
            _reject(session, record, exc, summary)
            continue
        sampled = result.decision is VerdictDecision.ALLOW and is_sampled(result.event_id, sample_rate)
        if record.kind == "results" and not sampled:
            summary.sampled_out += 1
            continue
        if session.scalar(select(Verdict.id).where(Verdict.event_id == result.event_id)) is not None:
            summary.duplicates += 1
            continue
        _store(session, record, result, summary)
    return summary


def _reject(session: Session, record: IncomingRecord, exc: Exception, summary: IngestSummary) -> None:
    summary.rejected += 1
    message = f"{type(exc).__name__}: {exc}"[:2000]
    summary.errors.append(message)
    session.add(
        IngestReject(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            error=message,
            value=(record.value or b"")[:MAX_REJECT_BYTES],
        )
    )


def _store(
    session: Session, record: IncomingRecord, result: ModerationResult, summary: IngestSummary
) -> None:
    key = content_key(result.tenant, result.content_id, result.image.sha256)
    verdict = Verdict(
        event_id=result.event_id,
        content_key=key,
        tenant=result.tenant,
        content_id=result.content_id,
        sha256=result.image.sha256,
        image_url=result.image.url,
        decision=result.decision.value,
        record_key=record.key,
        source="sample" if record.kind == "results" else "review",
        body=result.model_dump(mode="json"),
    )
    session.add(verdict)
    session.flush()
    summary.stored += 1
    triggered = [p for p in result.policies if p.triggered]
    severity = max((p.severity for p in triggered), key=SEVERITY_RANK.__getitem__, default="low")
    item = _open_item(session, key)
    if item is not None:
        _attach(session, item, verdict, triggered, severity)
        summary.attached += 1
        return
    last = session.scalars(
        select(Item).where(Item.content_key == key, Item.status == "decided").order_by(Item.decided_at.desc())
    ).first()
    if last is not None and DECISION_RANK[verdict.decision] <= OUTCOME_RANK.get(last.outcome or "", 0):
        verdict.item_id = last.id  # history of content already decided at least this strictly
        summary.history_only += 1
        return
    item = Item(
        queue="sample" if verdict.source == "sample" else "default",
        content_key=key,
        tenant=result.tenant,
        content_id=result.content_id,
        sha256=verdict.sha256,
        latest_verdict_id=verdict.id,
        decision=verdict.decision,
        decision_rank=DECISION_RANK[verdict.decision],
        severity=severity,
        severity_rank=SEVERITY_RANK[severity],
    )
    session.add(item)
    session.flush()
    verdict.item_id = item.id
    session.add_all(ItemPolicy(item_id=item.id, policy_id=p.id) for p in triggered)
    summary.opened += 1


def _open_item(session: Session, key: str) -> Item | None:
    query = select(Item).where(Item.content_key == key, Item.status == "open")
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()  # another ingester attaching to the same item waits
    return session.scalars(query).first()


def _attach(session: Session, item: Item, verdict: Verdict, triggered, severity: str) -> None:
    verdict.item_id = item.id
    item.latest_verdict_id = verdict.id
    item.updated_at = utcnow()
    if DECISION_RANK[verdict.decision] > item.decision_rank:
        item.decision, item.decision_rank = verdict.decision, DECISION_RANK[verdict.decision]
    if SEVERITY_RANK[severity] > item.severity_rank:
        item.severity, item.severity_rank = severity, SEVERITY_RANK[severity]
    if item.queue == "sample" and verdict.decision != "allow":
        item.queue = "default"  # sampled as an allow, now flagged: it is review work like any other
    known = set(session.scalars(select(ItemPolicy.policy_id).where(ItemPolicy.item_id == item.id)))
    session.add_all(ItemPolicy(item_id=item.id, policy_id=p.id) for p in triggered if p.id not in known)
