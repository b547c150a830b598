"""Decisions, on SQLite and PostgreSQL: labels, audit and the outbox row commit with the decision."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from moderation_worker.review import auth, queue
from moderation_worker.review.decisions import DecisionRefused, DecisionRequest, decide, skip
from moderation_worker.review.ingest import ingest
from moderation_worker.review.models import AuditEntry, Decision, Item, Label, Outbox, User
from moderation_worker.review.store import transaction
from tests.review.factories import PACK, record, verdict

POLICIES = frozenset(p.id for p in PACK.policies)
TOPIC = "moderation.decisions"


@pytest.fixture
def world(sessions):
    with transaction(sessions) as session:
        ingest(
            session,
            [
                record(
                    verdict("flagged", content_id="c1", triggered={"weapons": 0.9, "drugs": 0.7}),
                    key=b"listing-c1",
                ),
                record(verdict("sampled", content_id="c2"), kind="results"),
            ],
            sample_rate=1.0,
        )
        moderator = auth.add_user(session, "mo", "moderator", None, actor="test")
        lead = auth.add_user(session, "lee", "lead", None, actor="test")
    return sessions, moderator, lead


def _claim(sessions, user: User, name: str = "default") -> Item:
    with transaction(sessions) as session:
        return queue.claim_next(session, user, queue=name, lease_s=600)


def _decide(sessions, item_id: int, user: User, **request) -> Decision:
    with transaction(sessions) as session:
        return decide(
            session, session.get(Item, item_id), user, DecisionRequest(**request), decisions_topic=TOPIC,
            known_policies=POLICIES,
        )  # fmt: skip


def _labels(sessions) -> dict[str, tuple[bool, bool]]:
    with transaction(sessions) as session:
        return {label.policy_id: (label.label, label.explicit) for label in session.scalars(select(Label))}


def test_uphold_removes_labels_the_triggered_policies_and_queues_the_decision_for_kafka(world):
    sessions, moderator, _ = world
    item = _claim(sessions, moderator)

    decision = _decide(sessions, item.id, moderator, action="uphold")

    assert _labels(sessions) == {"drugs": (True, False), "weapons": (True, False)}
    with transaction(sessions) as session:
        item = session.get(Item, item.id)
        assert (item.status, item.outcome, item.claimed_by) == ("decided", "removed", None)
        [row] = session.scalars(select(Outbox)).all()
        message = json.loads(row.value)
        assert (row.topic, row.key, row.sent_at) == (TOPIC, b"listing-c1", None)  # keyed like the verdict
        assert message["decision_id"] == decision.decision_id and message["event_id"] == "flagged"
        assert (
            message["action"] == "uphold" and message["outcome"] == "removed" and message["moderator"] == "mo"
        )
        assert {label["policy"] for label in message["labels"]} == {"weapons", "drugs"}
        assert message["policy_pack"]["name"] == PACK.name and message["model"]["id"] == "m"
        actions = session.scalars(select(AuditEntry.action).order_by(AuditEntry.id)).all()
        assert actions[-2:] == ["claim", "decide"]


def test_overturn_needs_a_reason_and_labels_the_triggered_policies_negative(world):
    sessions, moderator, _ = world
    item = _claim(sessions, moderator)
    with pytest.raises(DecisionRefused, match="needs a reason"):
        _decide(sessions, item.id, moderator, action="overturn", reason="  ")

    _decide(sessions, item.id, moderator, action="overturn", reason="a toy, not a weapon")

    assert _labels(sessions) == {"drugs": (False, False), "weapons": (False, False)}
    with transaction(sessions) as session:
        assert session.get(Item, item.id).outcome == "allowed"


def test_explicit_marks_and_missed_policies_are_the_labels(world):
    sessions, moderator, _ = world
    item = _claim(sessions, moderator)
    marks = {
        "right": frozenset({"weapons"}),
        "wrong": frozenset({"drugs"}),
        "missed": frozenset({"scam_spam"}),
    }
    _decide(sessions, item.id, moderator, action="uphold", **marks)
    assert _labels(sessions) == {"weapons": (True, True), "drugs": (False, True), "scam_spam": (True, True)}


def test_escalation_moves_the_item_to_the_leads_and_a_lead_decides_it(world):
    sessions, moderator, lead = world
    item = _claim(sessions, moderator)
    _decide(sessions, item.id, moderator, action="escalate", reason="unsure")

    with transaction(sessions) as session:
        assert session.get(Item, item.id).queue == "escalated"
    assert _claim(sessions, moderator) is None  # out of the moderators' queue
    taken = _claim(sessions, lead, "escalated")
    assert taken.id == item.id
    _decide(sessions, item.id, lead, action="uphold")
    with transaction(sessions) as session:
        actions = [d.action for d in session.scalars(select(Decision).order_by(Decision.id))]
        assert actions == ["escalate", "uphold"]
        assert session.scalar(select(func.count()).select_from(Outbox)) == 2


def test_a_sampled_allow_overturned_is_removed_with_the_policy_it_missed(world):
    sessions, moderator, _ = world
    item = _claim(sessions, moderator, "sample")
    _decide(sessions, item.id, moderator, action="overturn", reason="a scam", missed=frozenset({"scam_spam"}))
    with transaction(sessions) as session:
        assert session.get(Item, item.id).outcome == "removed"
    assert _labels(sessions) == {"scam_spam": (True, True)}


def test_a_moderator_without_the_claim_cannot_decide_or_skip(world):
    sessions, moderator, lead = world
    item = _claim(sessions, lead)
    with pytest.raises(DecisionRefused, match="claim"):
        _decide(sessions, item.id, moderator, action="uphold")
    with pytest.raises(DecisionRefused), transaction(sessions) as session:
        skip(session, session.get(Item, item.id), moderator)


def test_a_decision_whose_transaction_fails_leaves_nothing_behind(world):
    # Given a decision taken in a transaction that then fails (the database, a crash, anything)
    sessions, moderator, _ = world
    item = _claim(sessions, moderator)
    with pytest.raises(RuntimeError), transaction(sessions) as session:
        decide(session, session.get(Item, item.id), moderator, DecisionRequest(action="uphold"),
               decisions_topic=TOPIC, known_policies=POLICIES)  # fmt: skip
        raise RuntimeError("the process dies before commit")

    # I expect no decision, label, outbox row or audit entry of it, and the item still open and claimed
    with transaction(sessions) as session:
        for model in (Decision, Label, Outbox):
            assert session.scalar(select(func.count()).select_from(model)) == 0
        assert session.scalar(select(func.count()).where(AuditEntry.action == "decide")) == 0
        assert session.get(Item, item.id).status == "open"


def test_unknown_actions_and_policies_are_refused(world):
    sessions, moderator, _ = world
    item = _claim(sessions, moderator)
    with pytest.raises(DecisionRefused, match="unknown action"):
        _decide(sessions, item.id, moderator, action="delete-everything")
    with pytest.raises(DecisionRefused, match="unknown policies"):
        _decide(sessions, item.id, moderator, action="uphold", missed=frozenset({"lasers"}))
