"""What a moderator does with a claimed item: uphold, overturn, escalate or skip.

A decision, its labels, its audit row and its outbox row are written in the caller's one
transaction: they commit together or not at all (the transactional outbox), and the outbox
publisher sends the row to ``moderation.decisions`` once it has committed.

Labels (what threshold tuning learns from), per policy:
- explicit marks: the model was *right* (the label is what the model said: triggered or not) or
  *wrong* (the opposite), and *missed* policies the model did not trigger but apply (positive);
- without a mark: uphold labels the triggered policies positive, overturn labels them negative, the
  other policies stay unlabelled. (On a sampled allow item nothing triggered, so an overturn needs a
  missed policy to say what the model missed.)
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from moderation_worker.review.audit import record
from moderation_worker.review.models import Decision, Item, Label, Outbox, User, Verdict, utcnow
from moderation_worker.review.queue import holds, release

ACTIONS = ("uphold", "overturn", "escalate")
DECISIONS_SCHEMA_VERSION = 1


class DecisionRefused(ValueError):
    """The decision cannot be taken as asked; the message says why (shown to the moderator)."""


@dataclass(frozen=True)
class DecisionRequest:
    action: str  # uphold | overturn | escalate
    reason: str | None = None
    right: frozenset[str] = field(default_factory=frozenset)  # policies the model got right
    wrong: frozenset[str] = field(default_factory=frozenset)  # policies the model got wrong
    missed: frozenset[str] = field(default_factory=frozenset)  # policies that apply and did not trigger


def outcome_of(item: Item, action: str) -> str:
    """What an action does to the content: a flagged item upheld is removed, overturned allowed; a
    sampled allow item upheld stays allowed, overturned is removed."""
    flagged = item.decision != "allow"
    if action == "uphold":
        return "removed" if flagged else "allowed"
    return "allowed" if flagged else "removed"


def decide(
    session: Session,
    item: Item,
    moderator: User,
    request: DecisionRequest,
    *,
    decisions_topic: str,
    known_policies: frozenset[str],
) -> Decision:
    """Take the decision on an item the moderator holds (a lead may decide any open item)."""
    if request.action not in ACTIONS:
        raise DecisionRefused(f"unknown action {request.action!r}")
    if item.status != "open":
        raise DecisionRefused("this item is already decided")
    if not holds(item, moderator) and moderator.role not in ("lead", "admin"):
        raise DecisionRefused("your claim on this item has ended; take it again from the queue")
    if request.action == "escalate" and item.queue == "escalated":
        raise DecisionRefused("this item is already escalated to the leads")
    reason = (request.reason or "").strip() or None
    if request.action == "overturn" and reason is None:
        raise DecisionRefused("overturning the model needs a reason")
    unknown = (request.right | request.wrong | request.missed) - known_policies
    if unknown:
        raise DecisionRefused(f"unknown policies {sorted(unknown)}")
    verdict = session.get(Verdict, item.latest_verdict_id)
    if verdict is None:
        raise DecisionRefused("this item has no verdict")
    now = utcnow()
    decision = Decision(
        decision_id=str(uuid.uuid4()),
        item_id=item.id,
        verdict_id=verdict.id,
        action=request.action,
        reason=reason,
        moderator_id=moderator.id,
        decided_at=now,
    )
    session.add(decision)
    session.flush()
    before = {"status": item.status, "queue": item.queue, "claimed_by": item.claimed_by}
    labels: list[Label] = []
    if request.action == "escalate":
        item.queue = "escalated"
        item.claimed_by, item.lease_until = None, None
    else:
        labels = _labels(decision, verdict, request, moderator)
        session.add_all(labels)
        item.status, item.outcome, item.decided_at = "decided", outcome_of(item, request.action), now
        item.claimed_by, item.lease_until = None, None
    item.updated_at = now
    session.add(_outbox_row(decisions_topic, decision, item, verdict, labels, moderator))
    record(
        session,
        actor=moderator.name,
        action="escalate" if request.action == "escalate" else "decide",
        item_id=item.id,
        before=before,
        after={
            "decision_id": decision.decision_id,
            "action": request.action,
            "outcome": item.outcome,
            "queue": item.queue,
            "reason": reason,
            "labels": {label.policy_id: label.label for label in labels},
        },
        at=now,
    )
    return decision


def skip(session: Session, item: Item, moderator: User) -> None:
    if not holds(item, moderator):
        raise DecisionRefused("your claim on this item has ended")
    release(session, item, actor=moderator, reason="skipped")


def _labels(decision: Decision, verdict: Verdict, request: DecisionRequest, moderator: User) -> list[Label]:
    body = verdict.body
    scored = {p["id"]: p for p in body.get("policies", [])}
    implied = request.action == "uphold"  # what an unmarked triggered policy is labelled
    labels: dict[str, tuple[bool, bool]] = {}
    for policy_id, policy in scored.items():
        if policy_id in request.right:
            labels[policy_id] = (bool(policy.get("triggered")), True)
        elif policy_id in request.wrong:
            labels[policy_id] = (not policy.get("triggered"), True)
        elif policy.get("triggered"):
            labels[policy_id] = (implied, False)
    for policy_id in request.missed:
        labels[policy_id] = (True, True)
    return [
        Label(
            decision_id=decision.id,
            policy_id=policy_id,
            label=label,
            explicit=explicit,
            score=scored.get(policy_id, {}).get("score"),
            confidence=scored.get(policy_id, {}).get("confidence"),
            threshold=scored.get(policy_id, {}).get("threshold"),
            sha256=verdict.sha256,
            image_url=verdict.image_url,
            moderator=moderator.name,
            decided_at=decision.decided_at,
            pack=body.get("policy_pack") or {},
            model=body.get("model") or {},
        )
        for policy_id, (label, explicit) in sorted(labels.items())
    ]


def decision_message(
    decision: Decision, item: Item, verdict: Verdict, labels: list[Label], moderator: User
) -> dict[str, Any]:
    """The record published to ``moderation.decisions`` (documented in the README)."""
    body = verdict.body
    return {
        "schema_version": DECISIONS_SCHEMA_VERSION,
        "decision_id": decision.decision_id,
        "event_id": verdict.event_id,
        "content_id": verdict.content_id,
        "tenant": verdict.tenant,
        "action": decision.action,
        "outcome": item.outcome if decision.action != "escalate" else None,
        "reason": decision.reason,
        "labels": [
            {
                "policy": label.policy_id,
                "label": label.label,
                "explicit": label.explicit,
                "score": label.score,
            }
            for label in labels
        ],
        "moderator": moderator.name,
        "decided_at": decision.decided_at.isoformat(),
        "image": {"url": verdict.image_url, "sha256": verdict.sha256},
        "policy_pack": body.get("policy_pack"),
        "model": body.get("model"),
        "verdict_decision": verdict.decision,
    }


def _outbox_row(
    topic: str, decision: Decision, item: Item, verdict: Verdict, labels: list[Label], moderator: User
) -> Outbox:
    message = decision_message(decision, item, verdict, labels, moderator)
    key = verdict.record_key or (verdict.content_id or verdict.event_id).encode()  # keyed like the verdict
    return Outbox(
        topic=topic,
        key=key,
        value=json.dumps(message, ensure_ascii=False).encode(),
        headers=[["decision_id", decision.decision_id], ["content-type", "application/json"]],
    )
